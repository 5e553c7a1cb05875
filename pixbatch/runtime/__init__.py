"""Device and precision choice, model preparation, tiling, batching and the pipeline."""
