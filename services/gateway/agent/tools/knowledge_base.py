"""``search_knowledge_base``: the gateway's own retrieval, for the caller, with citations.

It calls :func:`services.gateway.retrieval.lookup_and_search`, the path the search route and
knowledge-base chat use, in the request's context: the guard on the gateway's gRPC channels
checks every knowledge base for the caller the access middleware established, so a key
scoped to some knowledge bases searches only those, and a name it may not use is answered
exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Any

import grpc
from pydantic import Field

from services.gateway.agent.tools.base import (
    Arguments,
    ToolContext,
    ToolError,
    ToolResult,
    parameters_of,
    parse_arguments,
)
from services.gateway.retrieval import citation, lookup_and_search

MAX_TOP_K = 20
MAX_KNOWLEDGE_BASES = 10
# Passage text shown to the model per hit (the citation keeps the whole chunk).
MAX_PASSAGE_CHARS = 2000


class SearchKnowledgeBaseArguments(Arguments):
    query: str = Field(description="What to look for, as a standalone question or keywords.", min_length=1)
    knowledge_bases: list[str] = Field(
        default_factory=list,
        description=(
            "Names of the knowledge bases to search (results merged by score). "
            "Empty: the knowledge bases the conversation was started with."
        ),
        max_length=MAX_KNOWLEDGE_BASES,
    )
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K, description="How many passages to return.")


def _passages_text(hits: list[dict[str, Any]]) -> str:
    if not hits:
        return "No passage matched the query."
    blocks = []
    for hit in hits:
        number = hit["number"]
        text = hit["text"]
        if len(text) > MAX_PASSAGE_CHARS:
            text = text[:MAX_PASSAGE_CHARS] + " …"
        blocks.append(f"[{number}] {hit['knowledge_base']} / {hit['file_name']} (score {hit['score']:.2f})\n{text}")
    return "\n\n".join(blocks)


class SearchKnowledgeBaseTool:
    name = "search_knowledge_base"
    description = (
        "Search Zhiku knowledge bases (the organisation's own documents) and return the most "
        "relevant passages with their source files. Cite passages by their [number]."
    )
    parameters = parameters_of(SearchKnowledgeBaseArguments)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        args = parse_arguments(SearchKnowledgeBaseArguments, arguments)
        names = list(dict.fromkeys(args.knowledge_bases or context.knowledge_bases))
        if not names:
            raise ToolError("name at least one knowledge base in knowledge_bases")
        if context.clients is None:
            raise ToolError("knowledge bases cannot be searched: the gateway is not connected to them")
        settings = context.settings
        try:
            _, passages = await lookup_and_search(
                context.clients,
                names[0],
                names[1:],
                args.query,
                top_k=args.top_k or settings.default_top_k,
                score_threshold=0.0,
                timeout_s=settings.request_timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            # An unknown (or forbidden: same words) name, or a query the services reject.
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise ToolError(error.details() or error.code().name) from None
            raise
        hits = [
            {
                "number": number,
                "knowledge_base": passage.knowledge_base,
                **citation(passage.knowledge_base, passage),
            }
            for number, passage in enumerate(passages, start=context.first_citation)
        ]
        return ToolResult(
            text=_passages_text(hits),
            data={"query": args.query, "knowledge_bases": names, "passages": hits},
            citations=hits,
            summary=f"{len(hits)} passage(s) from {', '.join(names)}",
        )
