"""Document frequencies of sparse terms, kept per edge shard so BM25 is global across shards.

Why not the engine's IDF: a knowledge base spread over several shards would get one IDF per
shard (a rare word in one shard is common in another), so the same chunk would score
differently depending on where it lives and sparse scores of two shards could not be merged.
Shards created since sharding therefore store plain term weights (no IDF modifier) and the
query carries ``idf(t)`` computed here from the live statistics of every shard together:

    idf(t) = ln((N - n(t) + 0.5) / (n(t) + 0.5) + 1)

with ``N`` the live points that have a sparse vector and ``n(t)`` those containing ``t`` (the
formula of Qdrant's IDF modifier and of qdrant-client's local mode, so scores stay congruent
with the ``qdrant`` backend). The first shard of a collection made before sharding keeps the
engine's IDF modifier; its query weights are divided by the engine's own idf for that shard,
computed from the same statistics (exact as long as the engine's statistics are live, which
they are from load until the next delete in that shard).

Statistics live in memory, updated in the same worker-thread call as the write they follow.
A sealed shard only ever loses points, so its statistics are saved next to it with its point
count and reused at open when the count still matches; otherwise they are rebuilt by a scan.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def idf(docs: int, frequency: int) -> float:
    return math.log((docs - frequency + 0.5) / (frequency + 0.5) + 1.0)


class TermStats:
    """Live document frequencies of one shard: ``docs`` points with a sparse vector and, per
    term id, how many of them contain it."""

    def __init__(self) -> None:
        self.docs = 0
        self.frequency: dict[int, int] = {}

    def add(self, indices: Iterable[int]) -> None:
        self.docs += 1
        frequency = self.frequency
        for term in indices:
            frequency[term] = frequency.get(term, 0) + 1

    def remove(self, indices: Iterable[int]) -> None:
        self.docs -= 1
        frequency = self.frequency
        for term in indices:
            left = frequency.get(term, 0) - 1
            if left > 0:
                frequency[term] = left
            else:
                frequency.pop(term, None)

    @classmethod
    def merged(cls, parts: Iterable[TermStats]) -> TermStats:
        """The statistics of the union of several shards (a merge's, edge_merge.py)."""
        stats = cls()
        frequency = stats.frequency
        for part in parts:
            stats.docs += part.docs
            for term, count in part.frequency.items():
                frequency[term] = frequency.get(term, 0) + count
        return stats

    def get(self, term: int) -> int:
        return self.frequency.get(term, 0)

    def save(self, path: Path, points: int) -> None:
        """Write atomically, stamped with the shard's point count at this moment."""
        terms = np.fromiter(self.frequency.keys(), dtype=np.uint32, count=len(self.frequency))
        counts = np.fromiter(self.frequency.values(), dtype=np.int64, count=len(self.frequency))
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as out:
            np.savez(out, terms=terms, counts=counts, stamp=np.array([points, self.docs], dtype=np.int64))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path, points: int) -> TermStats | None:
        """The saved statistics when they were saved at ``points`` points, else None."""
        try:
            with np.load(path) as saved:
                stamp = saved["stamp"]
                if int(stamp[0]) != points:
                    return None
                stats = cls()
                stats.docs = int(stamp[1])
                stats.frequency = dict(zip(saved["terms"].tolist(), saved["counts"].tolist(), strict=True))
                return stats
        except (OSError, ValueError, KeyError):
            return None


def query_weights(
    indices: Sequence[int], values: Sequence[float], shards: Sequence[TermStats], engine_idf: Sequence[bool]
) -> list[tuple[list[int], list[float]]]:
    """Per shard, the sparse query to send: each value times the global idf of its term,
    divided by the shard's own idf where the engine applies one. Terms a shard does not
    contain are left out of its query (they cannot match there)."""
    docs = sum(stats.docs for stats in shards)
    frequencies = [sum(stats.get(term) for stats in shards) for term in indices]
    weights = [value * idf(docs, n) for value, n in zip(values, frequencies, strict=True)]
    queries: list[tuple[list[int], list[float]]] = []
    for stats, applies_idf in zip(shards, engine_idf, strict=True):
        kept_terms: list[int] = []
        kept_values: list[float] = []
        for term, weight in zip(indices, weights, strict=True):
            local = stats.get(term)
            if local == 0:
                continue
            kept_terms.append(term)
            kept_values.append(weight / idf(stats.docs, local) if applies_idf else weight)
        queries.append((kept_terms, kept_values))
    return queries
