"""Super-resolution architectures written for pixbatch."""
