"""The embed server over real gRPC with the bundled USE model (the fast one).

One server for the module: loading the model once keeps the run short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.common.grpc_server import GrpcService
from services.common.service_names import EMBED_SERVICE
from services.embed.server import build_spec
from services.embed.tests.conftest import embed, make_settings
from zhiku.v1 import embed_pb2, embed_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_TEXTS = 8
MAX_CHARS = 200


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[tuple[GrpcService, grpc.aio.Channel]]:
    # batch_size 3 < the texts of some calls, so batching and re-ordering are exercised.
    settings = make_settings(
        local_model="use", batch_size=3, max_texts_per_call=MAX_TEXTS, max_text_chars=MAX_CHARS
    )
    service = GrpcService(build_spec(settings), settings)
    await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    yield service, channel
    await channel.close()
    await service.stop()


@pytest.fixture
def stub(server: tuple[GrpcService, grpc.aio.Channel]) -> embed_pb2_grpc.EmbedServiceStub:
    return embed_pb2_grpc.EmbedServiceStub(server[1])


async def test_info_names_backend_model_and_dimension(stub: embed_pb2_grpc.EmbedServiceStub) -> None:
    info = await stub.Info(embed_pb2.EmbedInfoRequest(), timeout=10)
    assert info.backend == "local"
    assert "universal-sentence-encoder" in info.model
    assert info.dimension == 512
    assert info.max_batch_size == MAX_TEXTS


async def test_health_is_serving_after_the_model_loaded(server: tuple[GrpcService, grpc.aio.Channel]) -> None:
    health = health_pb2_grpc.HealthStub(server[1])
    reply = await health.Check(health_pb2.HealthCheckRequest(service=EMBED_SERVICE), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_vectors_are_unit_length_and_similar_chinese_scores_higher(
    stub: embed_pb2_grpc.EmbedServiceStub,
) -> None:
    texts = ["今天北京的天气很好，阳光明媚。", "北京今天天气晴朗，阳光很好。", "股票市场今天大幅下跌。"]
    vectors = await embed(stub, texts)
    assert vectors.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.2


async def test_batched_call_matches_single_calls_in_input_order(
    stub: embed_pb2_grpc.EmbedServiceStub,
) -> None:
    # Lengths out of order and more texts than batch_size: the backend sorts and splits.
    texts = [
        "一段很长很长的关于历史的文字，讲述了古代王朝的兴衰。",
        "短句",
        "medium length english text",
        "猫",
        "知识库",
    ]
    together = await embed(stub, texts)
    alone = np.concatenate([await embed(stub, [text]) for text in texts])
    # USE's int8 graph quantises activations per batch, so batch-mates move a vector a
    # little (cosine > 0.99), never far enough to swap it with another text's.
    similarity = together @ alone.T
    assert (np.diag(similarity) > 0.99).all()
    assert (similarity.argmax(axis=1) == np.arange(len(texts))).all()


async def test_embed_counts_texts_by_backend_and_kind(stub: embed_pb2_grpc.EmbedServiceStub) -> None:
    labels = {"backend": "local", "kind": "query"}
    before = REGISTRY.get_sample_value("zhiku_embed_texts_total", labels) or 0.0
    await embed(stub, ["问题一", "问题二"], kind=embed_pb2.EMBED_KIND_QUERY)
    assert REGISTRY.get_sample_value("zhiku_embed_texts_total", labels) == before + 2
    assert (REGISTRY.get_sample_value("zhiku_embed_batch_size_count", {"backend": "local"}) or 0) > 0


@pytest.mark.parametrize(
    ("texts", "kind", "message"),
    [
        ([], embed_pb2.EMBED_KIND_PASSAGE, "texts is empty: send between 1 and 8 texts"),
        (["a"] * (MAX_TEXTS + 1), embed_pb2.EMBED_KIND_PASSAGE, "too many texts: 9 in one call, limit 8"),
        (["ok", ""], embed_pb2.EMBED_KIND_PASSAGE, "texts[1] is empty or whitespace only"),
        (["ok", "fine", " \n\t"], embed_pb2.EMBED_KIND_QUERY, "texts[2] is empty or whitespace only"),
        (["x" * (MAX_CHARS + 1)], embed_pb2.EMBED_KIND_PASSAGE, "texts[0] has 201 characters, limit 200"),
        (["ok"], 7, "kind 7 is not a known EmbedKind"),
    ],
)
async def test_bad_requests_get_invalid_argument_and_the_service_stays_up(
    stub: embed_pb2_grpc.EmbedServiceStub, texts: list[str], kind: int, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        # A plain int: kind 7, which no EmbedKind names, is one of the cases under test.
        await stub.Embed(embed_pb2.EmbedRequest(texts=texts, kind=kind), timeout=10)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")
    assert (await embed(stub, ["still serving"])).shape == (1, 512)
