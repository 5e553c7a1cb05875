"""Discovery, decoding, encoding, metadata and atomic writes."""
