"""Source connectors: where a knowledge base's files come from when they are synced, not uploaded.

Each connector lists its items (a file, an object, a page) and fetches their bytes; the sync
(``services.ingest.worker.sync``) compares them with what the source indexed before. A source
that cannot be listed at all raises :class:`SourceUnavailable`, and the sync touches nothing.
"""
