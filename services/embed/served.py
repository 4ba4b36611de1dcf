"""The models one embed service serves: the default and ``ZHIKU_EMBED_EXTRA_MODELS``.

Several models at once let a knowledge base move to another model without downtime: its
searches keep embedding with the old model while a migration re-embeds its files with the
new one, and other knowledge bases keep theirs. Each model has its own backend (its own model
thread or TEI client), query cache and dynamic batcher, so one model's load never mixes texts
into another's batches. A request names its model by the entry that configured it (``use``, a
TEI URL) or by the model id the model reports (what the catalog records on a knowledge
base); empty is the default model.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from services.common.errors import InvalidArgument
from services.embed.backends import BACKENDS, EmbedBackend
from services.embed.batching import DynamicBatcher
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind


class ServedModel:
    """One model: its backend, an LRU of single-query vectors, and the query batcher."""

    def __init__(self, entry: str, backend: EmbedBackend, settings: EmbedSettings) -> None:
        self.entry = entry
        self.backend = backend
        self._cache_size = settings.query_cache_size
        # The gateway embeds every question and users repeat them: repeats skip the model.
        self._query_cache: OrderedDict[str, list[float]] = OrderedDict()
        # Queries of concurrent calls share backend calls; passages come batched already.
        self._query_batcher = (
            DynamicBatcher(
                self._embed_query_batch,
                backend=backend.name,
                max_texts=settings.batch_max_texts,
                window_s=settings.batch_window_ms / 1000,
                max_in_flight=backend.max_concurrent_calls,
            )
            if settings.batch_max_texts > 1
            else None
        )

    def answers_to(self, name: str) -> bool:
        return name in (self.entry, self.backend.model)

    async def _embed_query_batch(self, texts: list[str]) -> np.ndarray:
        return await self.backend.embed(texts, EmbedKind.QUERY)

    async def embed(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        if kind is EmbedKind.QUERY and self._query_batcher is not None:
            return await self._query_batcher.embed(texts)
        return await self.backend.embed(texts, kind)

    async def query_vector(self, text: str) -> list[float]:
        cached = self._query_cache.get(text)
        if cached is not None:
            self._query_cache.move_to_end(text)
            return cached
        vector: list[float] = (await self.embed([text], EmbedKind.QUERY))[0].tolist()
        if self._cache_size:
            self._query_cache[text] = vector
            if len(self._query_cache) > self._cache_size:
                self._query_cache.popitem(last=False)
        return vector

    async def close(self) -> None:
        if self._query_batcher is not None:
            await self._query_batcher.close()
        await self.backend.close()


class ServedModels:
    """The default model first, then the extras, each built from its own settings."""

    def __init__(self, settings: EmbedSettings) -> None:
        default_entry = settings.local_model if settings.backend == "local" else settings.tei_url
        self.models = [ServedModel(default_entry, BACKENDS[settings.backend](settings), settings)]
        for entry, own in settings.extra_model_settings():
            self.models.append(ServedModel(entry, BACKENDS[own.backend](own), own))

    @property
    def default(self) -> ServedModel:
        return self.models[0]

    def get(self, name: str) -> ServedModel:
        """The model a request names; InvalidArgument (listing what is served) when none."""
        if not name:
            return self.default
        for model in self.models:
            if model.answers_to(name):
                return model
        served = ", ".join(f"{model.entry} ({model.backend.model})" for model in self.models)
        raise InvalidArgument(
            f"embedding model {name!r} is not served by this embed service; it serves {served} "
            "(add it to ZHIKU_EMBED_EXTRA_MODELS)"
        )

    def ids(self) -> list[str]:
        return [model.backend.model for model in self.models]

    async def start(self) -> None:
        for model in self.models:
            await model.backend.start()

    async def close(self) -> None:
        for model in self.models:
            await model.close()
