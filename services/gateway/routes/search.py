"""``POST /v1/knowledge_bases/{kb}/search``: the retrieval step alone, for debugging and UIs."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.deps import ClientsDep, KnowledgeBaseName, SettingsDep
from services.gateway.retrieval import lookup_and_search, options_of
from services.gateway.schemas.native import SearchHit, SearchRequest, SearchResults

router = APIRouter(prefix="/v1/knowledge_bases/{kb}", tags=["search"])


@router.post("/search", response_model=SearchResults)
async def search(
    kb: KnowledgeBaseName, body: SearchRequest, clients: ClientsDep, settings: SettingsDep
) -> SearchResults:
    """Hits best first; ``score`` is a similarity in [0, 1] and ``score_threshold`` keeps
    hits with score >= threshold. ``mode`` picks dense, sparse or hybrid (default) search;
    ``knowledge_bases`` adds more knowledge bases to ``kb`` (hits merged by score)."""
    _, passages = await lookup_and_search(
        clients,
        kb,
        body.knowledge_bases,
        body.query,
        top_k=body.top_k or settings.default_top_k,
        score_threshold=body.score_threshold,
        timeout_s=settings.request_timeout_s,
        options=options_of(body),
    )
    return SearchResults(data=[SearchHit.from_pb(passage) for passage in passages])
