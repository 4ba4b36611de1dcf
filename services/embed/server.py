"""gRPC EmbedService: a thin servicer over the configured backend.

Run with ``python -m services.embed.server``; configure with ``ZHIKU_EMBED_*``.
"""

from __future__ import annotations

import grpc

from services.common.grpc_server import ServiceSpec, run_service
from services.common.service_names import EMBED_SERVICE
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind, validate_texts
from services.embed.metrics import EMBED_TEXTS
from services.embed.served import ServedModels
from zhiku.v1 import embed_pb2, embed_pb2_grpc


class EmbedServicer(embed_pb2_grpc.EmbedServiceServicer):
    """Checks the request, calls the model it names, converts the vectors; errors map centrally."""

    def __init__(self, models: ServedModels, settings: EmbedSettings) -> None:
        self._models = models
        self._settings = settings

    async def close(self) -> None:
        await self._models.close()

    async def Embed(
        self,
        request: embed_pb2.EmbedRequest,
        context: grpc.aio.ServicerContext[embed_pb2.EmbedRequest, embed_pb2.EmbedResponse],
    ) -> embed_pb2.EmbedResponse:
        kind = EmbedKind.from_pb(request.kind)
        model = self._models.get(request.model)
        texts = validate_texts(
            request.texts, self._settings.max_texts_per_call, self._settings.max_text_chars
        )
        if kind is EmbedKind.QUERY and len(texts) == 1:
            rows = [await model.query_vector(texts[0])]
        else:
            rows = (await model.embed(texts, kind)).tolist()
        EMBED_TEXTS.labels(model.backend.name, kind.value).inc(len(texts))
        return embed_pb2.EmbedResponse(
            vectors=[embed_pb2.Vector(values=row) for row in rows],
            model=model.backend.model,
            dimension=model.backend.dimension,
        )

    async def Rerank(
        self,
        request: embed_pb2.RerankRequest,
        context: grpc.aio.ServicerContext[embed_pb2.RerankRequest, embed_pb2.RerankResponse],
    ) -> embed_pb2.RerankResponse:
        limits = (self._settings.max_texts_per_call, self._settings.max_text_chars)
        (query,) = validate_texts([request.query], *limits)
        passages = validate_texts(request.passages, *limits)
        backend = self._models.default.backend
        scores = await backend.rerank(query, passages, self._settings.rerank_lexical_weight)
        return embed_pb2.RerankResponse(scores=scores, model=backend.model)

    async def Info(
        self,
        request: embed_pb2.EmbedInfoRequest,
        context: grpc.aio.ServicerContext[embed_pb2.EmbedInfoRequest, embed_pb2.EmbedInfo],
    ) -> embed_pb2.EmbedInfo:
        backend = self._models.get(request.model).backend
        return embed_pb2.EmbedInfo(
            backend=backend.name,
            model=backend.model,
            dimension=backend.dimension,
            max_batch_size=self._settings.max_texts_per_call,
            models=self._models.ids(),
        )


def build_spec(settings: EmbedSettings) -> ServiceSpec:
    """Wire models and servicer; the models load in ``startup``, before readiness."""
    models = ServedModels(settings)
    servicer = EmbedServicer(models, settings)

    def register(server: grpc.aio.Server) -> None:
        embed_pb2_grpc.add_EmbedServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="embed",
        service_names=[EMBED_SERVICE],
        register=register,
        startup=models.start,
        shutdown=[servicer.close],
    )


def main() -> None:
    settings = EmbedSettings()
    run_service(lambda: build_spec(settings), settings)


if __name__ == "__main__":
    main()
