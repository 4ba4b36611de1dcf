"""Search and chat retrieval options over the real stack: modes, filters, several knowledge
bases merged by score, and reranking (the embed service's local reranker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import grpc
import httpx
import pytest
import pytest_asyncio

from zhiku.v1 import ingest_pb2, ingest_pb2_grpc

from .stack import Stack, running_stack
from .test_knowledge_flow import make_kb

pytestmark = pytest.mark.asyncio(loop_scope="module")

OPS = {
    "ops.txt": "运维手册。设备面板显示 ZX-9041-错误码 时请更换滤芯。服务器每周日凌晨重启。\n".encode(),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kbs(stack: Stack) -> tuple[str, str]:
    """(a KB with the default documents, a KB with the ops manual)."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        return await make_kb(client, stack), await make_kb(client, stack, OPS)


async def search(client: httpx.AsyncClient, kb: str, query: str, **body: object) -> list[dict]:
    response = await client.post(f"/v1/knowledge_bases/{kb}/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
async def test_every_mode_ranks_and_scores_in_unit_range(
    client: httpx.AsyncClient, kbs: tuple[str, str], mode: str
) -> None:
    hits = await search(client, kbs[0], "express delivery Lyon", mode=mode)
    assert hits[0]["file_name"] == "shipping.txt"
    assert set(hits[0]) == {"id", "text", "score", "file_name", "metadata", "parent"}
    assert hits[0]["parent"] is None  # plain chunks
    scores = [hit["score"] for hit in hits]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert scores == sorted(scores, reverse=True)


async def test_fusion_choice_reaches_the_retrieve_service(
    client: httpx.AsyncClient, kbs: tuple[str, str]
) -> None:
    question = "express delivery Lyon"
    default = await search(client, kbs[0], question)
    dbsf = await search(client, kbs[0], question, fusion="dbsf")
    rrf = await search(client, kbs[0], question, fusion="rrf")
    assert [(h["id"], h["score"]) for h in default] == [(h["id"], h["score"]) for h in dbsf]
    assert rrf[0]["file_name"] == "shipping.txt"
    assert [h["score"] for h in rrf] != [h["score"] for h in dbsf]  # a different normalisation
    response = await client.post(
        f"/v1/knowledge_bases/{kbs[0]}/search", json={"query": question, "fusion": "borda"}
    )
    assert response.status_code == 422 and "fusion" in response.text


async def test_sparse_finds_the_exact_identifier(client: httpx.AsyncClient, kbs: tuple[str, str]) -> None:
    hits = await search(client, kbs[1], "ZX-9041", mode="sparse")
    assert [hit["file_name"] for hit in hits] == ["ops.txt"]
    assert await search(client, kbs[0], "ZX-9041", mode="sparse") == []


async def test_file_and_metadata_filters(client: httpx.AsyncClient, kbs: tuple[str, str]) -> None:
    question = "How many days do I have to ask for a refund?"
    only = await search(client, kbs[0], question, file_names=["shipping.txt", "年假制度.txt"])
    assert only and {hit["file_name"] for hit in only} <= {"shipping.txt", "年假制度.txt"}
    assert await search(client, kbs[0], question, metadata_filter={"no-such-field": "x"}) == []
    first = (await search(client, kbs[0], question))[0]
    if first["metadata"]:  # whatever the parser records (page, heading, ...) filters exactly
        key, value = next(iter(first["metadata"].items()))
        kept = await search(client, kbs[0], question, metadata_filter={key: value})
        assert kept and all(hit["metadata"].get(key) == value for hit in kept)


async def test_several_knowledge_bases_are_merged_by_score(
    client: httpx.AsyncClient, kbs: tuple[str, str]
) -> None:
    docs, ops = kbs
    merged = await search(client, docs, "设备面板显示 ZX-9041-错误码", knowledge_bases=[ops, docs], top_k=10)
    assert merged[0]["file_name"] == "ops.txt"
    assert {hit["file_name"] for hit in merged} >= {"ops.txt", "年假制度.txt"}
    scores = [hit["score"] for hit in merged]
    assert scores == sorted(scores, reverse=True)
    missing = await client.post(
        f"/v1/knowledge_bases/{docs}/search", json={"query": "x", "knowledge_bases": ["no-such-kb"]}
    )
    assert missing.status_code == 404


async def test_rerank_reorders_candidates_with_scores_in_unit_range(
    client: httpx.AsyncClient, kbs: tuple[str, str]
) -> None:
    hits = await search(client, kbs[0], "How many days do I have to ask for a refund?", rerank=True, top_k=2)
    assert len(hits) == 2
    assert hits[0]["file_name"] == "refunds.md"
    assert all(0.0 <= hit["score"] <= 1.0 for hit in hits)
    high = await search(client, kbs[0], "refund", rerank=True, score_threshold=0.999)
    assert high == []


async def test_chat_searches_several_knowledge_bases_and_cites_each(
    client: httpx.AsyncClient, kbs: tuple[str, str]
) -> None:
    docs, ops = kbs
    response = await client.post(
        "/v1/chat/completions",
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "设备面板显示 ZX-9041-错误码 怎么办？"}],
            "knowledge_base": docs,
            "knowledge_bases": [ops],
            "mode": "sparse",
            "top_k": 3,
        },
    )
    assert response.status_code == 200, response.text
    citations = response.json()["citations"]
    assert citations[0]["file_name"] == "ops.txt"
    assert citations[0]["url"].startswith(f"/v1/knowledge_bases/{quote(ops, safe='')}/files/")
    bad = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "knowledge_base": docs, "mode": "fuzzy"},
    )
    assert bad.status_code == 422


async def test_a_knowledge_base_deleted_behind_the_cache_answers_the_catalogs_404(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    """Searches reuse a knowledge base's record for a while (kb_cache.py); one deleted by
    someone else (another replica, the CLI, the ingest API) must still be a clean 404."""
    name = await make_kb(client, stack, OPS)
    assert await search(client, name, "ZX-9041", mode="sparse")  # the record is now cached
    async with grpc.aio.insecure_channel(stack.addresses["ingest"]) as channel:
        await ingest_pb2_grpc.IngestServiceStub(channel).DeleteKnowledgeBase(
            ingest_pb2.DeleteKnowledgeBaseRequest(name=name)
        )
    gone = await client.post(f"/v1/knowledge_bases/{name}/search", json={"query": "ZX-9041"})
    assert gone.status_code == 404, gone.text
    assert "knowledge base" in gone.json()["error"]["message"]
    assert "does not exist" in gone.json()["error"]["message"]

    # Re-created under the same name, it serves its new files, never the old record's.
    recreated = await client.post("/v1/knowledge_bases", json={"name": name})
    assert recreated.status_code == 201, recreated.text
    assert await search(client, name, "ZX-9041", mode="sparse") == []
