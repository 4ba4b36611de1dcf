"""gRPC EmbedService: a thin servicer over the configured backend.

Run with ``python -m services.embed.server``; configure with ``ZHIKU_EMBED_*``.
"""

from __future__ import annotations

import grpc

from services.common.grpc_server import ServiceSpec, run_service
from services.embed.backends import BACKENDS, EmbedBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind, validate_texts
from services.embed.metrics import EMBED_TEXTS
from zhiku.v1 import embed_pb2, embed_pb2_grpc

SERVICE_NAME = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name


class EmbedServicer(embed_pb2_grpc.EmbedServiceServicer):
    """Checks the request, calls the backend, converts the vectors; errors map centrally."""

    def __init__(self, backend: EmbedBackend, settings: EmbedSettings) -> None:
        self._backend = backend
        self._settings = settings

    async def Embed(
        self, request: embed_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embed_pb2.EmbedResponse:
        kind = EmbedKind.from_pb(request.kind)
        texts = validate_texts(
            request.texts, self._settings.max_texts_per_call, self._settings.max_text_chars
        )
        vectors = await self._backend.embed(texts, kind)
        EMBED_TEXTS.labels(self._backend.name, kind.value).inc(len(texts))
        return embed_pb2.EmbedResponse(
            vectors=[embed_pb2.Vector(values=row) for row in vectors.tolist()],
            model=self._backend.model,
            dimension=self._backend.dimension,
        )

    async def Info(
        self, request: embed_pb2.EmbedInfoRequest, context: grpc.aio.ServicerContext
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
        service_names=[SERVICE_NAME],
        register=register,
        startup=backend.start,
        shutdown=[backend.close],
    )


def main() -> None:
    settings = EmbedSettings()
    run_service(lambda: build_spec(settings), settings)


if __name__ == "__main__":
    main()
