"""Recently seen knowledge bases, so a search skips the catalog round trip.

Every search and knowledge-base chat needs its knowledge base's record (does it exist, does
it hold chunks). Asking the ingest service each time costs a gRPC hop plus a catalog
aggregate over the knowledge base's files, and on a small machine that work competes with
embedding the question for the same cores. Records are kept ``ttl_s`` seconds, and only for
knowledge bases that hold chunks: an empty one is asked again every time, so its first
chunks are searchable the moment they are indexed.

A record can outlive its knowledge base by at most ``ttl_s``. A search on it then fails with
NOT_FOUND at the retrieve service; the caller forgets the record and asks the catalog again
(see ``retrieval.search_passages``), so the client still gets the catalog's own answer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from zhiku.v1 import ingest_pb2


class KnowledgeBaseCache:
    def __init__(
        self, ttl_s: float, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, ingest_pb2.KnowledgeBase]] = OrderedDict()

    def get(self, name: str) -> ingest_pb2.KnowledgeBase | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        expires, kb = entry
        if self._clock() >= expires:
            del self._entries[name]
            return None
        return kb

    def put(self, kb: ingest_pb2.KnowledgeBase) -> None:
        if self._ttl_s <= 0 or kb.chunk_count <= 0:
            return
        self._entries.pop(kb.name, None)
        self._entries[kb.name] = (self._clock() + self._ttl_s, kb)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)
