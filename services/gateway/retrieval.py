"""Retrieval shared by search and knowledge-base chat: embed the query, search the KBs.

The knowledge bases are looked up (alongside the embedding) before searching: an unknown
name is a clean 404 (from ingest) instead of whatever the vector store says about a missing
collection, and a KB with no chunks yet answers "nothing found" without a search.

The record names the collection to search and the embedding model of its vectors (a
migration to another model switches both at once, see services/ingest/migration.py): the
query is embedded with each searched knowledge base's model, once per model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc

from services.gateway.authz import Permission, current_caller
from services.gateway.clients import ServiceClients
from services.gateway.schemas.native import FusionName, RetrievalParams, SearchModeName
from zhiku.v1 import common_pb2, embed_pb2, ingest_pb2, retrieve_pb2


async def get_knowledge_base(
    clients: ServiceClients, name: str, timeout_s: float
) -> ingest_pb2.KnowledgeBase:
    """The knowledge base's record, from the gateway's short-lived cache when it has it and
    the caller may view it (else the lookup below answers, refusals included)."""
    cached = clients.kb_cache.get(name)
    if cached is not None and await clients.guard.permits(current_caller(), name, Permission.VIEW):
        return cached
    found: ingest_pb2.KnowledgeBase = await clients.ingest.GetKnowledgeBase(
        ingest_pb2.GetKnowledgeBaseRequest(name=name), timeout=timeout_s
    )
    clients.kb_cache.put(found)
    return found


SEARCH_MODES: dict[str, retrieve_pb2.SearchMode] = {
    "hybrid": retrieve_pb2.SEARCH_MODE_HYBRID,
    "dense": retrieve_pb2.SEARCH_MODE_DENSE,
    "sparse": retrieve_pb2.SEARCH_MODE_SPARSE,
}
HYBRID_FUSIONS: dict[FusionName | None, retrieve_pb2.HybridFusion] = {
    None: retrieve_pb2.HYBRID_FUSION_UNSPECIFIED,  # the retrieve service's configured default
    "dbsf": retrieve_pb2.HYBRID_FUSION_DBSF,
    "rrf": retrieve_pb2.HYBRID_FUSION_RRF,
}
# With ``rerank``, each knowledge base hands this many times top_k candidates to the reranker.
RERANK_CANDIDATE_FACTOR = 4
# Passages per Rerank call: the embed service's default max_texts_per_call.
RERANK_BATCH = 64


@dataclass(frozen=True)
class SearchOptions:
    """What a caller may choose besides the query, top_k and threshold (defaults: hybrid, no
    filters, no reranking)."""

    mode: SearchModeName = "hybrid"
    file_names: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    rerank: bool = False
    fusion: FusionName | None = None


DEFAULT_OPTIONS = SearchOptions()


def options_of(params: RetrievalParams) -> SearchOptions:
    return SearchOptions(
        mode=params.mode,
        file_names=tuple(dict.fromkeys(params.file_names)),
        metadata=tuple(sorted(params.metadata_filter.items())),
        rerank=params.rerank,
        fusion=params.fusion,
    )


async def get_knowledge_bases(
    clients: ServiceClients, first: str, more: Sequence[str], timeout_s: float
) -> list[ingest_pb2.KnowledgeBase]:
    """``first`` and ``more`` (duplicates dropped), looked up concurrently; any unknown is a 404."""
    names = list(dict.fromkeys([first, *more]))
    return list(await asyncio.gather(*(get_knowledge_base(clients, name, timeout_s) for name in names)))


async def embed_query(clients: ServiceClients, query: str, timeout_s: float) -> list[float]:
    """The query's vector from the default model (the embed service caches recent queries)."""
    return (await embed_query_with(clients, query, timeout_s))[0]


async def embed_query_with(
    clients: ServiceClients, query: str, timeout_s: float, model: str = ""
) -> tuple[list[float], str]:
    """The query's vector from ``model`` (empty: the default), and the id of the model used."""
    embedded = await clients.embed.Embed(
        embed_pb2.EmbedRequest(texts=[query], kind=embed_pb2.EMBED_KIND_QUERY, model=model),
        timeout=timeout_s,
    )
    return list(embedded.vectors[0].values), embedded.model


async def query_vectors(
    clients: ServiceClients,
    kbs: Sequence[ingest_pb2.KnowledgeBase],
    query: str,
    timeout_s: float,
    known: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """The query's vector for each knowledge base's embedding model (keyed by the model as
    the record names it; "" is the default), reusing ``known`` ones, the others concurrently."""
    vectors = dict(known or {})
    missing = sorted({kb.embed_model for kb in kbs} - vectors.keys())
    embedded = await asyncio.gather(
        *(embed_query_with(clients, query, timeout_s, model) for model in missing)
    )
    for model, (vector, _) in zip(missing, embedded, strict=True):
        vectors[model] = vector
    return vectors


async def lookup_and_search(
    clients: ServiceClients,
    first: str,
    more: Sequence[str],
    query: str | Awaitable[str],
    *,
    top_k: int,
    score_threshold: float,
    timeout_s: float,
    options: SearchOptions = DEFAULT_OPTIONS,
) -> tuple[list[ingest_pb2.KnowledgeBase], list[common_pb2.Passage]]:
    """The knowledge bases and their hits, the lookups running while the query is embedded.

    Done one after the other, the catalog round trip adds to every search's latency; side by
    side it is hidden behind the embedding. ``query`` may still be in the making (chat's
    follow-up made standalone by the generate service): the lookups then run during that
    round trip too, and the embedding starts once the query is known. A failure to make the
    query comes first, as it would sequentially; then an unknown knowledge base fails the
    whole request with its 404, and the embedding is cancelled. (With cached records the
    lookup returns at once.)"""
    lookups = asyncio.ensure_future(get_knowledge_bases(clients, first, more, timeout_s))
    embedding: asyncio.Future[tuple[list[float], str]] | None = None
    try:
        if not isinstance(query, str):
            query = await query
        if options.mode != "sparse":
            # The default model's vector: what every knowledge base not migrated uses.
            embedding = asyncio.ensure_future(embed_query_with(clients, query, timeout_s))
        found = await lookups
    except BaseException:
        _abandon(lookups)
        if embedding is not None:
            _abandon(embedding)
        raise
    vector, model = await embedding if embedding is not None else ([], "")
    passages = await search_passages(
        clients,
        found,
        query,
        top_k=top_k,
        score_threshold=score_threshold,
        timeout_s=timeout_s,
        options=options,
        vector=vector,
        vector_model=model,
    )
    return found, passages


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a task whose outcome no longer matters (its failure, if it already failed, is
    marked as seen: the request is failing for an earlier reason)."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.cancel()


async def search_passages(
    clients: ServiceClients,
    kb: ingest_pb2.KnowledgeBase | Sequence[ingest_pb2.KnowledgeBase],
    query: str,
    *,
    top_k: int,
    score_threshold: float,
    timeout_s: float,
    options: SearchOptions = DEFAULT_OPTIONS,
    vector: list[float] | None = None,
    vector_model: str = "",
) -> list[common_pb2.Passage]:
    """Hits best first, scores in [0, 1] (the retrieve service guarantees both).

    ``vector`` is the query embedded by the default model (``vector_model`` its id, when
    known); knowledge bases on another model get the query embedded by theirs.

    Several knowledge bases are searched concurrently and merged by score (every mode's
    score is on the same [0, 1] scale). With ``options.rerank`` each one returns
    ``top_k * RERANK_CANDIDATE_FACTOR`` candidates, the embed service's reranker scores them
    and ``score_threshold`` applies to the reranker's score, which becomes the hit's score.
    """
    kbs = [kb] if isinstance(kb, ingest_pb2.KnowledgeBase) else list(kb)
    kbs = [one for one in kbs if one.chunk_count > 0]
    if not kbs:
        return []
    known: dict[str, list[float]] = {}
    if vector is not None:
        known = {"": vector, **({vector_model: vector} if vector_model else {})}
    candidates = top_k * RERANK_CANDIDATE_FACTOR if options.rerank else top_k

    async def requests_for(kbs: list[ingest_pb2.KnowledgeBase]) -> list[retrieve_pb2.SearchRequest]:
        sparse = options.mode == "sparse"
        vectors = {} if sparse else await query_vectors(clients, kbs, query, timeout_s, known)
        known.update(vectors)
        return [request_for(one, [] if sparse else vectors[one.embed_model]) for one in kbs]

    def request_for(one: ingest_pb2.KnowledgeBase, vector: list[float]) -> retrieve_pb2.SearchRequest:
        # The guard decides access, document access lists included, on the knowledge base:
        # a migrated one's collection ("<kb>__v<n>") is searched in the caller's name too.
        return retrieve_pb2.SearchRequest(
            knowledge_base=one.name,
            collection=one.collection or one.name,
            vector=vector,
            query_text=query,
            mode=SEARCH_MODES[options.mode],
            fusion=HYBRID_FUSIONS[options.fusion],
            top_k=candidates,
            score_threshold=0.0 if options.rerank else score_threshold,
            file_names=list(options.file_names),
            metadata_filter=dict(options.metadata),
        )

    requests = await requests_for(kbs)
    try:
        replies = await asyncio.gather(*(clients.retrieve.Search(r, timeout=timeout_s) for r in requests))
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.NOT_FOUND:
            raise
        # A record (cached, or read just before a migration's switch dropped the collection
        # it names) outlived its collection: ask the catalog for the real answer (its 404, or
        # the knowledge base as it is now), once, and search what it returns. Whether the
        # record came from the cache cannot be asked here: its entry may have expired since.
        for one in kbs:
            clients.kb_cache.forget(one.name)
        # (A migration may have switched its collection and model meanwhile: both are re-read.)
        fresh = await get_knowledge_bases(clients, kbs[0].name, [one.name for one in kbs[1:]], timeout_s)
        kbs = [one for one in fresh if one.chunk_count > 0]
        requests = await requests_for(kbs)
        replies = await asyncio.gather(*(clients.retrieve.Search(r, timeout=timeout_s) for r in requests))
    for reply, one in zip(replies, kbs, strict=True):
        for hit in reply.hits:  # the retrieve service names the collection: a migrated one's is not the name
            hit.knowledge_base = one.name
    hits = [hit for reply in replies for hit in reply.hits]
    if options.rerank and hits:
        hits = await _rerank(clients, query, hits, timeout_s)
        hits = [hit for hit in hits if hit.score >= score_threshold]
    hits.sort(key=lambda hit: hit.score, reverse=True)
    return hits[:top_k]


async def _rerank(
    clients: ServiceClients, query: str, hits: list[common_pb2.Passage], timeout_s: float
) -> list[common_pb2.Passage]:
    texts = [hit.text for hit in hits]
    batches = [texts[start : start + RERANK_BATCH] for start in range(0, len(texts), RERANK_BATCH)]
    replies = await asyncio.gather(
        *(
            clients.embed.Rerank(embed_pb2.RerankRequest(query=query, passages=batch), timeout=timeout_s)
            for batch in batches
        )
    )
    scores = [score for reply in replies for score in reply.scores]
    reranked = []
    for hit, score in zip(hits, scores, strict=True):
        copy = common_pb2.Passage()
        copy.CopyFrom(hit)
        copy.score = score
        reranked.append(copy)
    return reranked


def file_content_url(kb: str, file_name: str) -> str:
    """Where a citation's original file can be downloaded (path segments URL-quoted)."""
    return f"/v1/knowledge_bases/{quote(kb, safe='')}/files/{quote(file_name, safe='')}/content"


def citation(kb: str, passage: common_pb2.Passage) -> dict[str, object]:
    """A hit as an answer cites it; a parent-child chunk is cited as the child (its id and
    text) with its parent section's id and heading path."""
    found: dict[str, object] = {
        "file_name": passage.file_name,
        "chunk_id": passage.chunk_id,
        "score": round(passage.score, 6),
        "text": passage.text,
        "url": file_content_url(kb, passage.file_name),
    }
    if passage.parent_id:
        found["parent_id"] = passage.parent_id
        found["heading"] = passage.metadata.get("heading", "")
    return found
