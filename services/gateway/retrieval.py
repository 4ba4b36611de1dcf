"""Retrieval shared by search and knowledge-base chat: embed the query, search the KB.

The knowledge base is looked up first: an unknown name is a clean 404 (from ingest) instead
of whatever the vector store says about a missing collection, and a KB with no chunks yet
answers "nothing found" without embedding anything.
"""

from __future__ import annotations

from urllib.parse import quote

from services.gateway.backends import Backends
from zhiku.v1 import common_pb2, embed_pb2, ingest_pb2, retrieve_pb2


async def get_knowledge_base(backends: Backends, name: str, timeout_s: float) -> ingest_pb2.KnowledgeBase:
    return await backends.ingest.GetKnowledgeBase(
        ingest_pb2.GetKnowledgeBaseRequest(name=name), timeout=timeout_s
    )


async def search_passages(
    backends: Backends,
    kb: ingest_pb2.KnowledgeBase,
    query: str,
    *,
    top_k: int,
    score_threshold: float,
    timeout_s: float,
) -> list[common_pb2.Passage]:
    """Hits best first, scores in [0, 1] (the retrieve service guarantees both)."""
    if kb.chunk_count <= 0:
        return []
    embedded = await backends.embed.Embed(
        embed_pb2.EmbedRequest(texts=[query], kind=embed_pb2.EMBED_KIND_QUERY), timeout=timeout_s
    )
    reply = await backends.retrieve.Search(
        retrieve_pb2.SearchRequest(
            collection=kb.name,
            vector=embedded.vectors[0].values,
            top_k=top_k,
            score_threshold=score_threshold,
        ),
        timeout=timeout_s,
    )
    return list(reply.hits)


def file_content_url(kb: str, file_name: str) -> str:
    """Where a citation's original file can be downloaded (path segments URL-quoted)."""
    return f"/v1/knowledge_bases/{quote(kb, safe='')}/files/{quote(file_name, safe='')}/content"


def citation(kb: str, passage: common_pb2.Passage) -> dict[str, object]:
    return {
        "file_name": passage.file_name,
        "chunk_id": passage.chunk_id,
        "score": round(passage.score, 6),
        "text": passage.text,
        "url": file_content_url(kb, passage.file_name),
    }
