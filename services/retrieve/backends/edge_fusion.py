"""Hybrid fusion of candidate lists already merged across edge shards.

A hybrid search over several shards cannot let each shard fuse its own dense and sparse
candidates: DBSF rescales by each list's mean and spread, and RRF by ranks, so per-shard
fusions are not comparable. Instead every shard returns its dense and its sparse candidates,
each kind is merged into one list by its score (cosine and global BM25 are comparable across
shards, see :mod:`.edge_terms`), and the two merged lists are fused here exactly as the
engine fuses them inside one shard (same formulas as Qdrant: DBSF with the sample standard
deviation and mean +- 3 sd bounds, a list of one or without spread giving 0.5; RRF with
0-based ranks, see :mod:`services.retrieve.scores`). So a search gives the same hits and
scores whatever the number of shards.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

from services.retrieve.scores import RRF_K

K = TypeVar("K", bound=Hashable)


def _dbsf_normalised(scores: Sequence[float]) -> list[float]:
    count = len(scores)
    if count == 1:
        return [0.5]
    mean = sum(scores) / count
    variance = sum((score - mean) ** 2 for score in scores) / (count - 1)
    if variance == 0:
        return [0.5] * count
    spread = variance**0.5
    low, high = mean - 3 * spread, mean + 3 * spread
    return [(score - low) / (high - low) for score in scores]


def dbsf(lists: Sequence[Sequence[tuple[K, float]]]) -> dict[K, float]:
    """Sum over lists of each candidate's score rescaled by its list's distribution."""
    fused: dict[K, float] = {}
    for candidates in lists:
        if not candidates:
            continue
        normalised = _dbsf_normalised([score for _, score in candidates])
        for (key, _), value in zip(candidates, normalised, strict=True):
            fused[key] = fused.get(key, 0.0) + value
    return fused


def rrf(lists: Sequence[Sequence[tuple[K, float]]], k: int = RRF_K) -> dict[K, float]:
    """Sum over lists of ``1 / (k + rank)``, ranks from 0, lists ordered best first."""
    fused: dict[K, float] = {}
    for candidates in lists:
        for rank, (key, _) in enumerate(candidates):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return fused
