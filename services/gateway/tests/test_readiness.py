"""``/readyz`` against real services: one down or not serving makes the gateway unready."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from services.common.service_names import GENERATE_SERVICE
from services.embed.config import EmbedSettings
from services.embed.server import build_spec as build_embed
from services.gateway.app import create_app
from services.generate.config import GenerateSettings
from services.generate.server import build_spec as build_generate
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec as build_retrieve

from .support import asgi_client, gateway_settings, running_service


async def test_readyz_names_the_service_that_is_down_or_not_serving(tmp_path) -> None:
    embed_settings = EmbedSettings(backend="local", local_model="use", metrics_port=0)
    retrieve_settings = RetrieveSettings(backend="edge", metrics_port=0, edge_dir=tmp_path / "vectors")
    generate_settings = GenerateSettings(backend="extractive", metrics_port=0)
    async with (
        running_service(build_embed(embed_settings), embed_settings) as embed,
        running_service(build_retrieve(retrieve_settings), retrieve_settings) as retrieve,
        running_service(build_generate(generate_settings), generate_settings) as generate,
    ):
        addresses = {
            "embed": f"127.0.0.1:{embed.port}",
            "retrieve": f"127.0.0.1:{retrieve.port}",
            "generate": f"127.0.0.1:{generate.port}",
        }  # ingest: nothing listens
        async with asgi_client(create_app(gateway_settings(addresses, readyz_timeout_s=1.0))) as client:
            response = await client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["down"] == ["ingest"]
            assert body["services"]["embed"] == body["services"]["generate"] == "serving"
            assert body["services"]["ingest"].startswith("unreachable")

            # Up but draining (as during shutdown): reported as not serving.
            await generate.health.set(GENERATE_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            body = (await client.get("/readyz")).json()
            assert body["down"] == ["generate", "ingest"]
            assert body["services"]["generate"] == "not_serving"
