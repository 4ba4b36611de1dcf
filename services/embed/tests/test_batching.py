"""Dynamic batching of queries (services/embed/batching.py) over real backends.

Where the order of arrivals matters, a gate in front of the real backend holds the first
call, so the requests sent meanwhile queue exactly as they do behind a busy model under
load, whatever the machine's speed: no test depends on timing. The local tests use the
default ``e5`` model, whose vectors do not depend on their batch-mates (its attention stays
within each text and activations are quantised per token), so merged and single calls
must agree to float precision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import numpy as np
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from services.common.errors import DependencyUnavailable, InvalidArgument
from services.embed.backends.base import EmbedBackend
from services.embed.backends.local import LocalBackend
from services.embed.backends.tei import TeiBackend
from services.embed.batching import DynamicBatcher
from services.embed.domain import EmbedKind
from services.embed.tests.backends.test_tei import embed_batches, tei_settings
from services.embed.tests.conftest import embed, make_settings, running_embed
from services.embed.tests.fake_tei import FakeTei, FakeTeiState
from zhiku.v1 import embed_pb2

QUERY = EmbedKind.QUERY
QUERY_PB = embed_pb2.EMBED_KIND_QUERY
QUESTIONS = [
    "年假有几天？",
    "猫喜欢吃什么",
    "How long does shipping take?",
    "知识库是什么，它和搜索引擎有什么不同？",
    "报销需要哪些材料",
    "谁负责退货的运费",
    "北京今天的天气",
    "what is a vector database",
]


class Gate:
    """The backend's query embedding, recording each call's texts and holding calls while shut."""

    def __init__(self, backend: EmbedBackend) -> None:
        self.backend = backend
        self.calls: list[list[str]] = []
        self.opened = asyncio.Event()

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        await self.opened.wait()
        return await self.backend.embed(texts, QUERY)

    async def until_calls(self, count: int) -> None:
        """Let the loop run until ``count`` calls have reached the gate."""
        while len(self.calls) < count:
            await asyncio.sleep(0)


def merged_batches(backend: str) -> tuple[float, float]:
    """(requests, backend calls) so far in the ``zhiku_embed_batch_requests`` histogram."""
    labels = {"backend": backend}
    total = REGISTRY.get_sample_value("zhiku_embed_batch_requests_sum", labels) or 0.0
    count = REGISTRY.get_sample_value("zhiku_embed_batch_requests_count", labels) or 0.0
    return total, count


@pytest_asyncio.fixture
async def e5() -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(make_settings(local_model="e5"))
    await backend.start()
    yield backend
    await backend.close()


def batcher(
    call: Callable[[list[str]], Awaitable[np.ndarray]],
    *,
    backend: str = "local",
    max_texts: int = 32,
    window_s: float = 0.0,
    max_in_flight: int = 1,
) -> DynamicBatcher:
    return DynamicBatcher(
        call, backend=backend, max_texts=max_texts, window_s=window_s, max_in_flight=max_in_flight
    )


async def test_requests_queued_behind_a_busy_backend_share_its_next_call(e5: LocalBackend) -> None:
    gate = Gate(e5)
    queries = batcher(gate)
    first = asyncio.create_task(queries.embed(["first question"]))
    await gate.until_calls(1)  # an idle backend starts a lone request at once
    waiting = [asyncio.create_task(queries.embed([q])) for q in QUESTIONS]
    await asyncio.sleep(0)
    requests_before, calls_before = merged_batches("local")
    gate.opened.set()
    results = await asyncio.gather(first, *waiting)

    assert gate.calls == [["first question"], QUESTIONS]
    singles = np.concatenate([await e5.embed([q], QUERY) for q in QUESTIONS])
    merged = np.concatenate(results[1:])
    np.testing.assert_allclose(merged, singles, atol=1e-6)
    requests, calls = merged_batches("local")
    assert (requests - requests_before, calls - calls_before) == (len(QUESTIONS), 1)
    await queries.close()


async def test_batches_hold_at_most_max_texts_and_a_large_request_runs_whole(e5: LocalBackend) -> None:
    gate = Gate(e5)
    queries = batcher(gate, max_texts=3)
    first = asyncio.create_task(queries.embed(["first"]))
    await gate.until_calls(1)
    big = ["大请求一", "大请求二", "大请求三", "大请求四", "大请求五"]
    waiting = [
        asyncio.create_task(queries.embed(texts)) for texts in (["a"], ["b"], big, ["c"], ["d"], ["e"], ["f"])
    ]
    await asyncio.sleep(0)
    gate.opened.set()
    results = await asyncio.gather(first, *waiting)

    # FIFO: a and b fit together; the 5-text request rides alone, unsplit; then c d e, f.
    assert gate.calls == [["first"], ["a", "b"], big, ["c", "d", "e"], ["f"]]
    assert [len(rows) for rows in results] == [1, 1, 1, 5, 1, 1, 1, 1]
    np.testing.assert_allclose(results[3], await e5.embed(big, QUERY), atol=1e-6)
    await queries.close()


async def test_a_cancelled_or_timed_out_caller_leaves_the_queue_and_others_are_served(
    e5: LocalBackend,
) -> None:
    gate = Gate(e5)
    queries = batcher(gate)
    first = asyncio.create_task(queries.embed(["first"]))
    await gate.until_calls(1)
    kept = asyncio.create_task(queries.embed(["kept"]))
    cancelled = asyncio.create_task(queries.embed(["cancelled"]))
    await asyncio.sleep(0)
    cancelled.cancel()
    # A deadline works the same way (the server's interceptor wraps every call in asyncio.timeout).
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await queries.embed(["too late"])
    gate.opened.set()

    assert (await first).shape == (1, 384)
    np.testing.assert_allclose(await kept, await e5.embed(["kept"], QUERY), atol=1e-6)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert gate.calls == [["first"], ["kept"]]
    await queries.close()


async def test_a_caller_cancelled_while_its_batch_runs_does_not_disturb_the_others(e5: LocalBackend) -> None:
    gate = Gate(e5)
    queries = batcher(gate)
    # Created in the same loop turn, both are queued before the dispatcher first runs.
    stays = asyncio.create_task(queries.embed(["stays"]))
    leaves = asyncio.create_task(queries.embed(["leaves"]))
    await gate.until_calls(1)
    assert gate.calls == [["stays", "leaves"]]
    leaves.cancel()
    gate.opened.set()

    np.testing.assert_allclose(await stays, await e5.embed(["stays"], QUERY), atol=1e-6)
    with pytest.raises(asyncio.CancelledError):
        await leaves
    assert (await queries.embed(["still serving"])).shape == (1, 384)
    await queries.close()


async def test_a_window_holds_an_idle_request_for_company_but_not_a_full_batch(e5: LocalBackend) -> None:
    gate = Gate(e5)
    gate.opened.set()
    queries = batcher(gate, max_texts=3, window_s=30.0)
    lone = asyncio.create_task(queries.embed(["lone"]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert gate.calls == []  # waiting for company, within its window
    more = [asyncio.create_task(queries.embed([text])) for text in ("two", "three")]
    # A full batch starts at once; were it held for the 30 s window this would time out.
    async with asyncio.timeout(20):
        results = await asyncio.gather(lone, *more)
    assert gate.calls == [["lone", "two", "three"]]
    assert [rows.shape for rows in results] == [(1, 384)] * 3
    await queries.close()


async def test_close_fails_queued_and_running_callers_with_unavailable(e5: LocalBackend) -> None:
    gate = Gate(e5)
    queries = batcher(gate)
    running = asyncio.create_task(queries.embed(["running"]))
    await gate.until_calls(1)
    queued = asyncio.create_task(queries.embed(["queued"]))
    await asyncio.sleep(0)
    await queries.close()
    for task in (running, queued):
        with pytest.raises(DependencyUnavailable, match="shutting down"):
            await task
    with pytest.raises(DependencyUnavailable):
        await queries.embed(["after close"])


async def test_a_text_the_backend_rejects_fails_only_its_own_request() -> None:
    with FakeTei(FakeTeiState(max_client_batch_size=32, poison={"毒"})) as tei:
        backend = TeiBackend(tei_settings(tei.url))
        await backend.start()
        gate = Gate(backend)
        queries = batcher(gate, backend="tei", max_in_flight=4)
        first = asyncio.create_task(queries.embed(["first"]))
        await gate.until_calls(1)
        waiting = [asyncio.create_task(queries.embed([text])) for text in ("好", "毒", "也好")]
        await asyncio.sleep(0)
        gate.opened.set()
        first_rows, good, bad, also_good = await asyncio.gather(first, *waiting, return_exceptions=True)
        await queries.close()
        await backend.close()

    assert isinstance(bad, InvalidArgument)
    assert "cannot tokenize" in str(bad)
    # gather(return_exceptions=True) types each outcome as "rows or an exception".
    assert [rows.shape for rows in (first_rows, good, also_good)] == [(1, 64)] * 3  # type: ignore[union-attr]
    # The merged request failed as a whole, then each request went alone.
    assert tei.state.rejected == [["好", "毒", "也好"], ["毒"]]
    assert embed_batches(tei) == [["first"], ["好"], ["也好"]]


async def test_a_backend_wide_failure_fails_the_batch_without_retrying_each_request() -> None:
    with FakeTei(FakeTeiState(max_client_batch_size=32)) as tei:
        backend = TeiBackend(tei_settings(tei.url, tei_max_retries=0))
        await backend.start()
        gate = Gate(backend)
        queries = batcher(gate, backend="tei")
        first = asyncio.create_task(queries.embed(["first"]))
        await gate.until_calls(1)
        waiting = [asyncio.create_task(queries.embed([text])) for text in ("一", "二", "三")]
        await asyncio.sleep(0)
        tei.state.failures.extend([503] * 10)
        posts_before = tei.state.requests.count("POST /embed")
        gate.opened.set()
        outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
        posts = tei.state.requests.count("POST /embed") - posts_before
        await queries.close()
        await backend.close()

    assert all(isinstance(outcome, DependencyUnavailable) for outcome in outcomes)
    assert posts == 2  # the first call and the merged one; no request-by-request retry
    assert gate.calls == [["first"], ["一", "二", "三"]]


async def test_concurrent_grpc_queries_are_merged_and_match_single_calls() -> None:
    async with running_embed(make_settings(local_model="e5", query_cache_size=0)) as stub:
        singles = np.concatenate([await embed(stub, [q], kind=QUERY_PB) for q in QUESTIONS])
        requests_before, calls_before = merged_batches("local")
        invalid = stub.Embed(embed_pb2.EmbedRequest(texts=["  "], kind=QUERY_PB), timeout=60)
        results = await asyncio.gather(
            *(embed(stub, [q], kind=QUERY_PB) for q in QUESTIONS * 4), invalid, return_exceptions=True
        )
        requests, calls = merged_batches("local")

    *vectors, refused = results
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    # gather(return_exceptions=True) types each outcome as "vectors or an exception".
    np.testing.assert_allclose(np.concatenate(vectors), np.concatenate([singles] * 4), atol=1e-6)  # type: ignore[arg-type]
    # 32 queries sent at once: the first runs alone, the rest arrive while the model is busy.
    assert requests - requests_before == len(QUESTIONS) * 4
    assert calls - calls_before < requests - requests_before


async def test_batching_off_sends_every_request_on_its_own() -> None:
    with FakeTei(FakeTeiState(max_client_batch_size=32)) as tei:
        settings = tei_settings(tei.url, batch_max_texts=1, tei_max_concurrency=1, query_cache_size=0)
        async with running_embed(settings) as stub:
            await asyncio.gather(*(embed(stub, [q], kind=QUERY_PB) for q in QUESTIONS))
    assert sorted(embed_batches(tei)) == sorted([q] for q in QUESTIONS)
