"""Measurements of pixbatch itself (``pixbatch bench``): each stage's capacity, the end-to-end pipeline and
the plain loops a user would otherwise write, on the same photos in the same run."""
