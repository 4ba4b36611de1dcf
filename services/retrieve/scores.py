"""The one score convention of the retrieve service, shared by every backend.

Both backends store vectors with Qdrant's Cosine distance (vectors are normalised on insert)
and get back the cosine similarity ``cos`` in [-1, 1]. Callers see

    score = (1 + cos) / 2        clipped to [0, 1]

a similarity where 1 is the same direction, 0.5 orthogonal and 0 opposite. This affine map
keeps the full ordering (clipping negative cosines to 0 would tie all of them) and makes a
threshold translate exactly: ``score >= t``  <=>  ``cos >= 2t - 1``. ``score_threshold``
keeps hits with ``score >= threshold``; 0 keeps everything.
"""

from __future__ import annotations

# Engines compute cosine in float32: push the engine-side floor a little lower and apply the
# exact comparison on the mapped score afterwards, so a hit sitting on the threshold is kept.
_ENGINE_SLACK = 1e-5


def score_from_cosine(cosine: float) -> float:
    return min(1.0, max(0.0, (1.0 + cosine) / 2.0))


def cosine_floor(threshold: float) -> float | None:
    """The cosine threshold to hand to the engine (None: no engine-side filtering)."""
    if threshold <= 0.0:
        return None
    return 2.0 * threshold - 1.0 - _ENGINE_SLACK


def keep(score: float, threshold: float) -> bool:
    return score >= threshold
