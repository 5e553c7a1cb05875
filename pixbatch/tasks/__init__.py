"""Task definitions over the one engine (``pixbatch.runtime.engine``): what each command computes."""
