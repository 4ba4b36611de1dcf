"""The TEI backend over real gRPC against a fake TEI speaking TEI's HTTP contract on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.common.errors import DependencyUnavailable
from services.common.grpc_server import GrpcService
from services.embed.server import build_spec
from services.embed.tests.conftest import embed, make_settings, running_embed
from services.embed.tests.fake_tei import FakeTei, FakeTeiState, fake_vector
from zhiku.v1 import embed_pb2

pytestmark = pytest.mark.asyncio

TEXTS = [f"第{i}段文字 about topic {i}" for i in range(10)]


@pytest.fixture
def tei() -> Iterator[FakeTei]:
    with FakeTei(FakeTeiState(max_client_batch_size=4)) as server:
        yield server


def tei_settings(url: str, **overrides: object):  # -> EmbedSettings
    values: dict[str, object] = {
        "backend": "tei",
        "tei_url": url,
        "tei_backoff_s": 0.01,
        "tei_backoff_max_s": 0.05,
        "tei_max_retries": 3,
        "tei_timeout_s": 5,
        **overrides,
    }
    return make_settings(**values)


def expected(texts: list[str], dimension: int = 64) -> np.ndarray:
    vectors = np.stack([fake_vector(text, dimension) for text in texts])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def embed_batches(tei: FakeTei) -> list[list[str]]:
    """The /embed batches the fake answered, without the startup dimension probe."""
    return [batch for batch in tei.state.batches if batch != ["dimension probe"]]


async def test_info_reports_tei_model_and_probed_dimension(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url)) as stub:
        info = await stub.Info(embed_pb2.EmbedInfoRequest(), timeout=10)
    assert (info.backend, info.model, info.dimension) == ("tei", "fake/bge-tiny", 64)
    assert tei.state.requests[:2] == ["GET /info", "POST /embed"]


async def test_calls_are_split_at_max_client_batch_size_and_keep_input_order(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url)) as stub:
        vectors = await embed(stub, TEXTS)
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-5)
    batches = embed_batches(tei)
    assert sorted(len(batch) for batch in batches) == [2, 4, 4]
    assert sorted(text for batch in batches for text in batch) == sorted(TEXTS)


async def test_query_and_passage_prefixes_are_applied(tei: FakeTei) -> None:
    settings = tei_settings(tei.url, tei_query_prefix="query: ", tei_passage_prefix="passage: ")
    async with running_embed(settings) as stub:
        query = await embed(stub, ["什么是知识库"], kind=embed_pb2.EMBED_KIND_QUERY)
        passage = await embed(stub, ["知识库是文档的集合"], kind=embed_pb2.EMBED_KIND_PASSAGE)
        unspecified = await embed(stub, ["默认是段落"], kind=embed_pb2.EMBED_KIND_UNSPECIFIED)
    assert embed_batches(tei) == [
        ["query: 什么是知识库"],
        ["passage: 知识库是文档的集合"],
        ["passage: 默认是段落"],
    ]
    np.testing.assert_allclose(query, expected(["query: 什么是知识库"]), atol=1e-5)
    np.testing.assert_allclose(passage, expected(["passage: 知识库是文档的集合"]), atol=1e-5)
    assert unspecified.shape == (1, 64)


async def test_no_prefix_by_default(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url)) as stub:
        await embed(stub, ["原文"], kind=embed_pb2.EMBED_KIND_QUERY)
    assert embed_batches(tei) == [["原文"]]


async def test_a_413_below_the_advertised_limit_halves_the_batch() -> None:
    # /info says 8, the server enforces 3 (a proxy in between, another replica...).
    state = FakeTeiState(max_client_batch_size=3, advertised_batch_size=8)
    with FakeTei(state) as tei:
        async with running_embed(tei_settings(tei.url)) as stub:
            vectors = await embed(stub, TEXTS[:8])
            np.testing.assert_allclose(vectors, expected(TEXTS[:8]), atol=1e-5)
            # The backend learned the real limit: the next call goes out in batches of <= 2.
            before = len(embed_batches(tei))
            await embed(stub, TEXTS[:4])
    assert all(len(batch) <= 3 for batch in embed_batches(tei))
    assert [len(batch) for batch in embed_batches(tei)[before:]] == [2, 2]


async def test_transient_503_and_429_are_retried(tei: FakeTei) -> None:
    before = REGISTRY.get_sample_value("zhiku_embed_tei_retries_total", {"reason": "503"}) or 0.0
    async with running_embed(tei_settings(tei.url)) as stub:
        tei.state.failures.extend([503, 429])
        vectors = await embed(stub, ["重试之后成功"])
    np.testing.assert_allclose(vectors, expected(["重试之后成功"]), atol=1e-5)
    assert tei.state.requests.count("POST /embed") == 1 + 3  # probe, then two failures and a success
    assert REGISTRY.get_sample_value("zhiku_embed_tei_retries_total", {"reason": "503"}) == before + 1


async def test_persistent_503_becomes_unavailable_with_the_cause(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url, tei_max_retries=2)) as stub:
        tei.state.failures.extend([503] * 3)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embed(stub, ["一直失败"])
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"TEI at {tei.url} answered 503 to POST /embed after 3 attempts: unhealthy" in (
            caught.value.details() or ""
        )
        # Once TEI recovers, so does the service.
        assert (await embed(stub, ["恢复了"])).shape == (1, 64)


async def test_persistent_429_becomes_resource_exhausted(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url, tei_max_retries=1)) as stub:
        tei.state.failures.extend([429] * 2)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embed(stub, ["太忙了"])
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "overloaded (429)" in (caught.value.details() or "")


async def test_tokenizer_error_is_the_callers_and_not_retried(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url)) as stub:
        tei.state.failures.append(422)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embed(stub, ["无法分词"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "TEI could not tokenize the input" in (caught.value.details() or "")
    assert tei.state.requests.count("POST /embed") == 2  # probe + the one refused call


async def test_tei_going_down_gives_a_clear_unavailable(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url, tei_max_retries=1)) as stub:
        await embed(stub, ["连接已建立"])  # a pooled keep-alive connection exists
        tei.stop()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embed(stub, ["服务器已经停了"])
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"TEI at {tei.url} is unreachable (POST /embed, 2 attempts)" in (caught.value.details() or "")


async def test_invalid_input_is_refused_before_reaching_tei(tei: FakeTei) -> None:
    async with running_embed(tei_settings(tei.url)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embed(stub, ["好", ""])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "texts[1] is empty" in (caught.value.details() or "")
    assert embed_batches(tei) == []


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_start_fails_clearly_when_tei_is_not_there() -> None:
    url = f"http://127.0.0.1:{_unused_port()}"
    settings = tei_settings(url, tei_max_retries=1)
    service = GrpcService(build_spec(settings), settings)
    try:
        with pytest.raises(DependencyUnavailable, match=r"is unreachable \(GET /info, 2 attempts\)"):
            await service.start()
    finally:
        await service.stop()
