"""Training: data, degradations, losses and the training loop."""
