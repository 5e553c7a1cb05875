"""Evaluation to the published protocols: degradation, metrics, and the SR and segmentation evaluators."""
