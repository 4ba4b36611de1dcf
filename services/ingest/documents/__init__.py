"""From uploaded bytes to chunks: parsers per file format, text decoding, splitters."""
