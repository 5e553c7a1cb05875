"""Checkpoints that pixbatch did not train, recognised from their state-dict keys (via spandrel)."""
