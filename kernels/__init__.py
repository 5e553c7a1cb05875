"""Triton kernels and their launchers, installed as ``pixbatch.kernels``."""
