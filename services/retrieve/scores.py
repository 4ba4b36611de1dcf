"""The one score convention of the retrieve service, shared by every backend and mode.

Every score is a similarity in [0, 1], higher is better, and ``score_threshold`` keeps hits
with ``score >= threshold`` in every mode. Each mode maps its engine score monotonically, so
the ranking the engine produced is never changed by the mapping.

Dense. Both backends store vectors with Qdrant's Cosine distance (vectors are normalised on insert)
and get back the cosine similarity ``cos`` in [-1, 1]. Callers see

    score = (1 + cos) / 2        clipped to [0, 1]

a similarity where 1 is the same direction, 0.5 orthogonal and 0 opposite. This affine map
keeps the full ordering (clipping negative cosines to 0 would tie all of them) and makes a
threshold translate exactly: ``score >= t``  <=>  ``cos >= 2t - 1``. ``score_threshold``
keeps hits with ``score >= threshold``; 0 keeps everything.

Sparse. The engine returns a BM25 score ``s >= 0`` (IDF-weighted, unbounded: it grows with
the number and rarity of the query words a chunk contains). Callers see

    score = s / (s + SPARSE_HALF)

0 = no query word in common, 0.5 at ``s = SPARSE_HALF``, approaching 1 for chunks that share
many rare words. ``SPARSE_HALF = 10`` is about the BM25 score of a chunk that contains two or
three of the rarer query words once, so 0.5 reads as "clearly lexically related".

Hybrid. The engine merges the dense and the sparse candidate lists (``hybrid_candidates``
each) in one of two ways, chosen per request or by ``ZHIKU_RETRIEVE_HYBRID_FUSION``:

* ``dbsf`` (default), distribution-based score fusion: within each list, a candidate's engine
  score ``x`` is rescaled by that list's own spread, ``(x - (mean - 3 sd)) / (6 sd)`` (a list
  of one gives 0.5), so the typical candidate sits near 0.5 and one 3 sd above the mean at 1
  (a standout can pass 1), and the two values are added into ``dbsf >= 0``. Callers see

      score = dbsf / (dbsf + 1)

  0.5 = average in both lists (or 3 sd above in one and absent from the other), 2/3 = 3 sd
  above the mean in both, approaching 1 for chunks far ahead in both. The map is strictly
  increasing, so standouts keep the engine's order instead of tying at a clipped 1. Unlike
  RRF the fusion keeps how much better the best candidate is, so a chunk that one list finds
  with a standout score (an exact identifier, a rare name) is not pulled down to the level
  of chunks both lists rank in the middle.
* ``rrf``, reciprocal rank fusion: ``rrf = sum over lists of 1 / (RRF_K + rank)`` with
  0-based ranks (both backends compute it this way). The best attainable value is
  ``n / RRF_K`` (first in all ``n`` lists), so callers see

      score = rrf / (n / RRF_K)

  1 = ranked first by both; a chunk first in one list and absent from the other gets 0.5.

Either way a hybrid score is relative to the query's candidates, not an absolute similarity:
a threshold on it keeps "well placed by both searches" rather than "close in meaning".

So every hit also carries ``dense_score``: the dense mapping above of the cosine between the
query vector and the hit's stored vector, whatever mode ranked it (0 when the query had no
vector). The generate service reads it to tell an answerable question from one the knowledge
base merely has neighbours for.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from services.retrieve.domain import DENSE, MODE_DENSE

if TYPE_CHECKING:
    from services.retrieve.domain import Hit, SearchQuery

# Engines compute cosine in float32: push the engine-side floor a little lower and apply the
# exact comparison on the mapped score afterwards, so a hit sitting on the threshold is kept.
_ENGINE_SLACK = 1e-5


# Reciprocal rank fusion constant (the usual 60: ranks beyond the first few matter little).
RRF_K = 60
# BM25 score that maps to 0.5.
SPARSE_HALF = 10.0


def score_from_cosine(cosine: float) -> float:
    return min(1.0, max(0.0, (1.0 + cosine) / 2.0))


def dense_similarity(query: Sequence[float], stored: Sequence[float] | None) -> float:
    """``score_from_cosine`` of the two vectors (0 when either is missing or empty)."""
    if not query or not stored or len(query) != len(stored):
        return 0.0
    a, b = np.asarray(query, dtype=np.float64), np.asarray(stored, dtype=np.float64)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))  # numpy: a top_k of 100 stays sub-ms
    return score_from_cosine(float(a @ b) / norms) if norms else 0.0


def hit_dense_score(query: SearchQuery, raw: float, vectors: object) -> float:
    """A hit's ``dense_score``: its own score in dense mode, else the similarity of the query
    vector to the hit's stored dense vector (engines return named vectors as a mapping)."""
    if query.mode == MODE_DENSE:
        return score_from_cosine(raw)
    stored = vectors.get(DENSE) if isinstance(vectors, Mapping) else None
    return dense_similarity(query.vector, stored)


def cosine_floor(threshold: float) -> float | None:
    """The cosine threshold to hand to the engine (None: no engine-side filtering)."""
    if threshold <= 0.0:
        return None
    return 2.0 * threshold - 1.0 - _ENGINE_SLACK


def keep(score: float, threshold: float) -> bool:
    """Compare as the caller sees both numbers: float32 on the wire, so a threshold copied
    from a returned score keeps that hit."""
    return _f32(score) >= _f32(threshold)


def _f32(value: float) -> float:
    (single,) = struct.unpack("f", struct.pack("f", value))
    return float(single)


def score_from_bm25(bm25: float) -> float:
    bm25 = max(0.0, bm25)
    return bm25 / (bm25 + SPARSE_HALF)


def score_from_rrf(rrf: float, lists: int) -> float:
    """Normalise an RRF score over ``lists`` fused candidate lists into [0, 1]."""
    return min(1.0, max(0.0, rrf * RRF_K / lists))


def score_from_dbsf(dbsf: float) -> float:
    """A distribution-based fusion score (a sum of per-list values near 0..1) into [0, 1)."""
    dbsf = max(0.0, dbsf)
    return dbsf / (dbsf + 1.0)


def map_score(mode: str, raw: float, fusion: str = "dbsf") -> float:
    """The engine's score for ``mode`` ("dense", "sparse" or "hybrid" of two lists merged by
    ``fusion``, "dbsf" or "rrf") in [0, 1]."""
    if mode == "sparse":
        return score_from_bm25(raw)
    if mode == "hybrid":
        return score_from_rrf(raw, 2) if fusion == "rrf" else score_from_dbsf(raw)
    return score_from_cosine(raw)


def rank_and_keep(hits: list[Hit], threshold: float) -> list[Hit]:
    """Hits at or above the threshold, best first, ties broken by chunk id: RRF gives equal
    scores to points with mirrored ranks, and an engine's order among them varies between
    calls, so without a tie-break the same query could page differently twice in a row."""
    kept = [hit for hit in hits if keep(hit.score, threshold)]
    return sorted(kept, key=lambda hit: (-_f32(hit.score), hit.chunk_id))
