"""The gateway's knowledge-base record cache: what it keeps, for how long, and how much."""

from __future__ import annotations

from services.gateway.kb_cache import KnowledgeBaseCache
from zhiku.v1 import ingest_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def kb(name: str, chunks: int = 3) -> ingest_pb2.KnowledgeBase:
    return ingest_pb2.KnowledgeBase(name=name, chunk_count=chunks)


def test_a_record_is_served_until_its_ttl_runs_out() -> None:
    clock = Clock()
    cache = KnowledgeBaseCache(ttl_s=2.0, clock=clock)
    cache.put(kb("manuals"))
    clock.now += 1.9
    assert cache.get("manuals") == kb("manuals")
    clock.now += 0.2
    assert cache.get("manuals") is None


def test_empty_knowledge_bases_are_never_kept() -> None:
    """Their first chunks must be searchable the moment they are indexed."""
    cache = KnowledgeBaseCache(ttl_s=60)
    cache.put(kb("new", chunks=0))
    assert cache.get("new") is None


def test_forget_and_a_zero_ttl() -> None:
    cache = KnowledgeBaseCache(ttl_s=60)
    cache.put(kb("a"))
    cache.forget("a")
    assert cache.get("a") is None
    off = KnowledgeBaseCache(ttl_s=0)
    off.put(kb("a"))
    assert off.get("a") is None


def test_the_least_recently_stored_record_goes_first_when_full() -> None:
    cache = KnowledgeBaseCache(ttl_s=60, max_entries=2)
    for name in ("a", "b", "c"):
        cache.put(kb(name))
    assert [cache.get(name) is not None for name in ("a", "b", "c")] == [False, True, True]
