"""Embed service: text -> L2-normalised float32 vectors, from a bundled model or TEI over HTTP."""
