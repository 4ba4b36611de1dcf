"""Rerank over real gRPC: TEI's /rerank (fake TEI on loopback) and the local blend (USE)."""

from __future__ import annotations

import grpc
import pytest

from services.embed import rerank
from services.embed.tests.backends.test_tei import tei_settings
from services.embed.tests.conftest import make_settings, running_embed
from services.embed.tests.fake_tei import FakeTei, FakeTeiState
from zhiku.v1 import embed_pb2

QUERY = "设备显示 ZX-9041 错误码怎么办"
PASSAGES = [
    "今天食堂的午餐是红烧肉。",
    "设备显示 ZX-9041 错误码时请更换滤芯。",
    "设备显示 ZX-1234 错误码时请重启。",
    "The weather in Lyon is mild.",
    "错误码手册第三章。",
]


async def test_tei_rerank_returns_scores_in_request_order() -> None:
    with FakeTei(FakeTeiState(max_client_batch_size=2)) as tei:
        async with running_embed(tei_settings(tei.url)) as stub:
            reply = await stub.Rerank(embed_pb2.RerankRequest(query=QUERY, passages=PASSAGES), timeout=10)
        sent = tei.state.reranks
    assert len(reply.scores) == len(PASSAGES)
    assert all(0.0 <= score <= 1.0 for score in reply.scores)
    # Split at max_client_batch_size (sent concurrently), every text once, with the query.
    assert sorted(len(batch) - 1 for batch in sent) == [1, 2, 2]
    assert sorted(text for batch in sent for text in batch[1:]) == sorted(PASSAGES)
    best = max(range(len(PASSAGES)), key=lambda i: reply.scores[i])
    assert best == 1
    assert reply.model == "fake/bge-tiny"


async def test_local_rerank_prefers_the_exact_passage() -> None:
    async with running_embed(make_settings(backend="local", local_model="use", local_threads=1)) as stub:
        reply = await stub.Rerank(embed_pb2.RerankRequest(query=QUERY, passages=PASSAGES), timeout=60)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Rerank(embed_pb2.RerankRequest(query=QUERY, passages=[]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    scores = list(reply.scores)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert max(range(len(scores)), key=scores.__getitem__) == 1
    assert scores[1] > scores[2] > scores[3]


def test_overlap_counts_query_bigrams_found() -> None:
    assert rerank.overlap("ZX-9041", "code zx 9041 here") == 1.0
    assert rerank.overlap("错误码", "错误") == 0.5
    assert rerank.overlap("？？", "anything") == 0.0
