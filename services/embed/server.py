"""gRPC EmbedService: a thin servicer over the configured backend.

Run with ``python -m services.embed.server``; configure with ``ZHIKU_EMBED_*``.
"""

from __future__ import annotations

from collections import OrderedDict

import grpc
import numpy as np

from services.common.grpc_server import ServiceSpec, run_service
from services.common.service_names import EMBED_SERVICE
from services.embed.backends import BACKENDS, EmbedBackend
from services.embed.batching import DynamicBatcher
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind, validate_texts
from services.embed.metrics import EMBED_TEXTS
from zhiku.v1 import embed_pb2, embed_pb2_grpc


class EmbedServicer(embed_pb2_grpc.EmbedServiceServicer):
    """Checks the request, calls the backend, converts the vectors; errors map centrally."""

    def __init__(self, backend: EmbedBackend, settings: EmbedSettings) -> None:
        self._backend = backend
        self._settings = settings
        # LRU of single-query embeddings: the gateway embeds every question, users repeat them.
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

    async def _embed_query_batch(self, texts: list[str]) -> np.ndarray:
        return await self._backend.embed(texts, EmbedKind.QUERY)

    async def _embed(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        if kind is EmbedKind.QUERY and self._query_batcher is not None:
            return await self._query_batcher.embed(texts)
        return await self._backend.embed(texts, kind)

    async def close(self) -> None:
        if self._query_batcher is not None:
            await self._query_batcher.close()

    async def _query_vector(self, text: str) -> list[float]:
        cached = self._query_cache.get(text)
        if cached is not None:
            self._query_cache.move_to_end(text)
            return cached
        vector: list[float] = (await self._embed([text], EmbedKind.QUERY))[0].tolist()
        if self._settings.query_cache_size:
            self._query_cache[text] = vector
            if len(self._query_cache) > self._settings.query_cache_size:
                self._query_cache.popitem(last=False)
        return vector

    async def Embed(
        self,
        request: embed_pb2.EmbedRequest,
        context: grpc.aio.ServicerContext[embed_pb2.EmbedRequest, embed_pb2.EmbedResponse],
    ) -> embed_pb2.EmbedResponse:
        kind = EmbedKind.from_pb(request.kind)
        texts = validate_texts(
            request.texts, self._settings.max_texts_per_call, self._settings.max_text_chars
        )
        if kind is EmbedKind.QUERY and len(texts) == 1:
            rows = [await self._query_vector(texts[0])]
        else:
            rows = (await self._embed(texts, kind)).tolist()
        EMBED_TEXTS.labels(self._backend.name, kind.value).inc(len(texts))
        return embed_pb2.EmbedResponse(
            vectors=[embed_pb2.Vector(values=row) for row in rows],
            model=self._backend.model,
            dimension=self._backend.dimension,
        )

    async def Rerank(
        self,
        request: embed_pb2.RerankRequest,
        context: grpc.aio.ServicerContext[embed_pb2.RerankRequest, embed_pb2.RerankResponse],
    ) -> embed_pb2.RerankResponse:
        limits = (self._settings.max_texts_per_call, self._settings.max_text_chars)
        (query,) = validate_texts([request.query], *limits)
        passages = validate_texts(request.passages, *limits)
        scores = await self._backend.rerank(query, passages, self._settings.rerank_lexical_weight)
        return embed_pb2.RerankResponse(scores=scores, model=self._backend.model)

    async def Info(
        self,
        request: embed_pb2.EmbedInfoRequest,
        context: grpc.aio.ServicerContext[embed_pb2.EmbedInfoRequest, embed_pb2.EmbedInfo],
    ) -> embed_pb2.EmbedInfo:
        return embed_pb2.EmbedInfo(
            backend=self._backend.name,
            model=self._backend.model,
            dimension=self._backend.dimension,
            max_batch_size=self._settings.max_texts_per_call,
        )


def build_spec(settings: EmbedSettings) -> ServiceSpec:
    """Wire backend and servicer; the model loads in ``startup``, before readiness."""
    backend = BACKENDS[settings.backend](settings)
    servicer = EmbedServicer(backend, settings)

    def register(server: grpc.aio.Server) -> None:
        embed_pb2_grpc.add_EmbedServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="embed",
        service_names=[EMBED_SERVICE],
        register=register,
        startup=backend.start,
        shutdown=[servicer.close, backend.close],
    )


def main() -> None:
    settings = EmbedSettings()
    run_service(lambda: build_spec(settings), settings)


if __name__ == "__main__":
    main()
