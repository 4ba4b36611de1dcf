"""gRPC entry point of the generate service: ``python -m services.generate.server``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from services.common.grpc_server import ServiceSpec, run_service
from services.common.service_names import GENERATE_SERVICE
from services.generate import terms
from services.generate.backends import Backend
from services.generate.coalesce import coalesced
from services.generate.config import GenerateSettings
from services.generate.domain import GenerationRequest
from services.generate.named_models import ModelRouter
from services.generate.prompting import PromptTemplates
from zhiku.v1 import generate_pb2, generate_pb2_grpc


class GenerateServicer(generate_pb2_grpc.GenerateServiceServicer):
    """Converts messages and relays the named model's stream; policies live in Generator,
    which model answers in ModelRouter."""

    def __init__(self, router: ModelRouter, stream_interval_s: float = 0.0) -> None:
        self.router = router
        self.stream_interval_s = stream_interval_s

    async def Generate(
        self,
        request: generate_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[generate_pb2.GenerateRequest, generate_pb2.GenerateResponse],
    ) -> AsyncIterator[generate_pb2.GenerateResponse]:
        parsed = GenerationRequest.from_pb(request)
        generator = self.router.resolve(parsed.model)
        # Set when the call ends for any reason, cancellation included: a backend decoding in
        # a worker thread sees it at the next token, whatever the event loop is doing.
        cancel = threading.Event()
        # typeshed declares the callback as a class of its own, not a callable protocol.
        context.add_done_callback(lambda _call: cancel.set())  # type: ignore[arg-type]
        generation = generator.generate(parsed, cancel)
        async with aclosing(coalesced(generation, self.stream_interval_s)) as chunks:
            async for chunk in chunks:
                yield chunk.to_pb()

    async def RewriteQuery(
        self,
        request: generate_pb2.RewriteQueryRequest,
        context: grpc.aio.ServicerContext[
            generate_pb2.RewriteQueryRequest, generate_pb2.RewriteQueryResponse
        ],
    ) -> generate_pb2.RewriteQueryResponse:
        turns = GenerationRequest.turns_from_pb(request.messages)
        query, method = await self.router.rewriter(request.model).rewrite(turns)
        return generate_pb2.RewriteQueryResponse(query=query, method=method)

    async def ListModels(
        self,
        request: generate_pb2.ListModelsRequest,
        context: grpc.aio.ServicerContext[generate_pb2.ListModelsRequest, generate_pb2.ListModelsResponse],
    ) -> generate_pb2.ListModelsResponse:
        return generate_pb2.ListModelsResponse(models=[m.to_pb() for m in self.router.models()])


def build_spec(settings: GenerateSettings, backend: Backend | None = None) -> ServiceSpec:
    """The service for the shared bootstrap; tests may pass the default model's backend to
    inspect it. Every configured model is built here, so a bad name fails at start-up."""
    templates = PromptTemplates.load(settings.prompts_dir)  # fails fast on a broken template
    router = ModelRouter.build(settings, templates, backend)
    servicer = GenerateServicer(router, settings.stream_interval_ms / 1000)

    def register(server: grpc.aio.Server) -> None:
        generate_pb2_grpc.add_GenerateServiceServicer_to_server(servicer, server)

    async def startup() -> None:
        for backend in router.backends:  # one at a time: two engines loading at once may not fit
            await backend.start()
        await asyncio.to_thread(terms.warm_up)  # the dictionary the grounding checks weigh words by

    return ServiceSpec(
        name="generate",
        service_names=[GENERATE_SERVICE],
        register=register,
        startup=startup,
        shutdown=[backend.close for backend in router.backends],
    )


def main() -> None:
    settings = GenerateSettings()
    run_service(lambda: build_spec(settings), settings)


if __name__ == "__main__":
    main()
