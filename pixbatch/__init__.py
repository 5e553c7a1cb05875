"""pixbatch: stream folders of images through image-to-image neural networks."""

__version__ = "0.1.0"
