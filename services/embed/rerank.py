"""The local reranker: the embedding model's own similarity blended with lexical overlap.

No cross-encoder ships in a PyPI package that runs here, so the fallback combines what is
at hand: ``(1 + cos) / 2`` of the query and passage embeddings (the bi-encoder's view of
meaning) and the share of the query's character bigrams that occur in the passage (exact
wording: identifiers, names, numbers, which small embedding models blur). Character bigrams
work for Chinese without a segmenter and for English alike. Both parts are in [0, 1], so
the blend is too:

    score = (1 - w) * (1 + cos) / 2 + w * overlap        w = rerank_lexical_weight

Production uses TEI's cross-encoder ``/rerank`` instead (the ``tei`` backend).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

_NOISE = re.compile(r"[\W_]+", re.UNICODE)


def bigrams(text: str) -> set[str]:
    normal = _NOISE.sub(" ", unicodedata.normalize("NFKC", text).lower())
    grams: set[str] = set()
    for word in normal.split():
        if len(word) == 1:
            grams.add(word)
        grams.update(word[i : i + 2] for i in range(len(word) - 1))
    return grams


def overlap(query: str, passage: str) -> float:
    """Share of the query's bigrams found in the passage (0 when the query has none)."""
    wanted = bigrams(query)
    if not wanted:
        return 0.0
    return len(wanted & bigrams(passage)) / len(wanted)


def blend(
    query_vector: np.ndarray, passage_vectors: np.ndarray, query: str, passages: list[str], weight: float
) -> list[float]:
    """Scores in [0, 1] for unit vectors, one per passage, in order."""
    dense = np.clip((1.0 + passage_vectors @ query_vector) / 2.0, 0.0, 1.0)
    lexical = np.asarray([overlap(query, passage) for passage in passages], dtype=np.float64)
    scores: list[float] = ((1.0 - weight) * dense + weight * lexical).tolist()
    return scores
