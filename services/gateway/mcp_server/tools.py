"""The four MCP tools, each a thin use of what the gateway's HTTP routes use.

``search`` is the native search route (``retrieval.lookup_and_search`` with the route's own
request model), ``ask`` is knowledge-base chat (``plan_chat`` then ``start_generation``, the
path of ``/v1/chat/completions``), ``get_file_content`` is the download route's
``GetFileContent``, ``list_knowledge_bases`` the listing route's RPC. Every knowledge base they
name is checked by the gRPC guard for the caller :func:`~.calls.run_tool` establishes.

(No ``from __future__ import annotations`` here: the MCP SDK reads these signatures, with their
``Annotated`` descriptions, to build each tool's input schema.)
"""

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from services.gateway.chat.generation import start_generation
from services.gateway.chat.planning import plan_chat
from services.gateway.mcp_server.calls import ToolEnv, run_tool
from services.gateway.mcp_server.results import (
    Answer,
    Citation,
    FileContent,
    FoundPassage,
    KnowledgeBaseListing,
    PassageSearch,
)
from services.gateway.names import file_name_error, kb_name_error
from services.gateway.retrieval import file_content_url, lookup_and_search, options_of
from services.gateway.routes.conversations import UnsupportedSentence
from services.gateway.schemas.native import MAX_QUERY_CHARS, KnowledgeBase, SearchRequest
from services.gateway.schemas.openai import ChatCompletionRequest
from zhiku.v1 import ingest_pb2

# Most knowledge bases one search or question may name (the native route's 1 + 20).
MAX_KNOWLEDGE_BASES = 21
# Characters of a file's text one get_file_content call returns at most.
MAX_PAGE_CHARS = 100_000
# Content types read as text besides text/*.
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/x-yaml", "application/yaml"})

KnowledgeBases = Annotated[
    str | list[str],
    Field(
        description="the knowledge base to use, or a list of several (hits merged by score); "
        "names as list_knowledge_bases shows them",
    ),
]
TopK = Annotated[int | None, Field(ge=1, le=100, description="passages to return (default: the gateway's)")]
Mode = Annotated[
    Literal["hybrid", "dense", "sparse"],
    Field(description="hybrid (default): dense vectors and BM25-style keywords fused; dense; or sparse"),
]
ScoreThreshold = Annotated[
    float, Field(ge=0.0, le=1.0, description="keep passages with score >= threshold (similarity in [0, 1])")
]
MetadataFilter = Annotated[
    dict[str, str] | None,
    Field(description="only chunks whose metadata has all these key/value pairs"),
]
FileNames = Annotated[list[str] | None, Field(description="only chunks of these files")]


def _names(knowledge_bases: str | list[str]) -> list[str]:
    """The named knowledge bases in order, duplicates dropped; a bad name is refused as such."""
    names = [knowledge_bases] if isinstance(knowledge_bases, str) else list(knowledge_bases)
    names = list(dict.fromkeys(names))
    if not names:
        raise ToolError("knowledge_bases: name at least one knowledge base")
    if len(names) > MAX_KNOWLEDGE_BASES:
        raise ToolError(f"knowledge_bases: at most {MAX_KNOWLEDGE_BASES} knowledge bases per call")
    for name in names:
        problem = kb_name_error(name)
        if problem is not None:
            raise ToolError(f"knowledge_bases: {problem}")
    return names


def _result(model: KnowledgeBaseListing | PassageSearch | Answer | FileContent, text: str) -> CallToolResult:
    """The structured result with its readable text beside it."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


async def list_knowledge_bases(ctx: Context) -> Annotated[CallToolResult, KnowledgeBaseListing]:
    """List the knowledge bases this caller may search, with their descriptions and sizes.

    Call this first to learn which names search, ask and get_file_content accept."""

    async def body(env: ToolEnv) -> CallToolResult:
        reply = await env.clients.ingest.ListKnowledgeBases(
            ingest_pb2.ListKnowledgeBasesRequest(), timeout=env.settings.request_timeout_s
        )
        listing = KnowledgeBaseListing(
            knowledge_bases=[KnowledgeBase.from_pb(kb) for kb in reply.knowledge_bases]
        )
        return _result(listing, listing.text())

    return await run_tool("list_knowledge_bases", ctx, body)


async def search(
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what to look for")],
    knowledge_bases: KnowledgeBases,
    ctx: Context,
    top_k: TopK = None,
    mode: Mode = "hybrid",
    score_threshold: ScoreThreshold = 0.0,
    metadata_filter: MetadataFilter = None,
    file_names: FileNames = None,
) -> Annotated[CallToolResult, PassageSearch]:
    """Search knowledge bases for passages relevant to a query (no answer is generated).

    Returns the best passages first, each with its file, score (similarity in [0, 1]), text,
    metadata and the URL of the original file."""

    async def body(env: ToolEnv) -> CallToolResult:
        names = _names(knowledge_bases)
        request = SearchRequest(
            query=query,
            knowledge_bases=names[1:],
            top_k=top_k,
            score_threshold=score_threshold,
            mode=mode,
            metadata_filter=metadata_filter or {},
            file_names=file_names or [],
        )
        _, passages = await lookup_and_search(
            env.clients,
            names[0],
            request.knowledge_bases,
            request.query,
            top_k=request.top_k or env.settings.default_top_k,
            score_threshold=request.score_threshold,
            timeout_s=env.settings.request_timeout_s,
            options=options_of(request),
        )
        results = PassageSearch(
            query=query, knowledge_bases=names, mode=mode, hits=[FoundPassage.from_pb(p) for p in passages]
        )
        return _result(results, results.text())

    return await run_tool("search", ctx, body)


async def ask(
    question: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="the question")],
    knowledge_bases: KnowledgeBases,
    ctx: Context,
    top_k: TopK = None,
    mode: Mode = "hybrid",
    score_threshold: ScoreThreshold = 0.0,
    metadata_filter: MetadataFilter = None,
    file_names: FileNames = None,
    model: Annotated[str, Field(description="the LLM to answer with (default: the deployment's)")] = "",
) -> Annotated[CallToolResult, Answer]:
    """Answer a question from knowledge bases, with numbered citations of the passages used.

    The answer cites passages as [1], [2]...; each citation gives its file, text, score and
    whether it supports the answer. `abstained` is true when the passages cannot answer."""

    async def body(env: ToolEnv) -> CallToolResult:
        names = _names(knowledge_bases)
        chat = ChatCompletionRequest(
            model=model,
            messages=[{"role": "user", "content": question}],  # type: ignore[list-item]
            knowledge_base=names[0],
            knowledge_bases=names[1:],
            top_k=top_k,
            score_threshold=score_threshold,
            mode=mode,
            metadata_filter=metadata_filter or {},
            file_names=file_names or [],
            rewrite=False,
        )
        plan = await plan_chat(chat, env.clients, env.settings)
        generation = await start_generation(env.clients, plan, env.settings.chat_timeout_s)
        try:
            text = "".join([delta async for delta in generation.deltas()])
        finally:
            generation.cancel()
        grounded = plan.grounded_fields(generation)
        answer = Answer(
            answer=text,
            knowledge_bases=names,
            abstained=grounded["abstained"],
            retrieval_query=grounded["retrieval_query"],
            citations=[Citation.model_validate(c) for c in grounded.get("citations", plan.citations())],
            unsupported=[UnsupportedSentence.model_validate(u) for u in grounded.get("unsupported", [])],
        )
        return _result(answer, answer.text())

    return await run_tool("ask", ctx, body)


def _decoded(content: bytes, content_type: str) -> str | None:
    """The file's text when it is a text file (UTF-8, or GB18030 for declared text), else None."""
    if b"\x00" in content:
        return None
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if content_type.startswith("text/") or content_type in TEXT_TYPES:
        try:
            return content.decode("gb18030")
        except UnicodeDecodeError:
            return None
    return None


async def get_file_content(
    knowledge_base: Annotated[str, Field(description="the knowledge base holding the file")],
    file_name: Annotated[str, Field(description="the file's name, as search results and citations give it")],
    ctx: Context,
    offset: Annotated[int, Field(ge=0, description="character offset to read the text from")] = 0,
    max_chars: Annotated[
        int, Field(ge=1, le=MAX_PAGE_CHARS, description="characters of text to return at most")
    ] = 20_000,
    query: Annotated[
        str | None,
        Field(max_length=MAX_QUERY_CHARS, description="also return the file's indexed chunks matching this"),
    ] = None,
    top_k: TopK = None,
) -> Annotated[CallToolResult, FileContent]:
    """Read a file of a knowledge base: its text (paged with offset and max_chars) for text
    files, and with query its indexed chunks that match the query.

    Binary originals (PDF, Word...) have no text here: pass query to read their chunks."""

    async def body(env: ToolEnv) -> CallToolResult:
        name = _names(knowledge_base)[0]
        problem = file_name_error(file_name)
        if problem is not None:
            raise ToolError(f"file_name: {problem}")
        stored = await env.clients.ingest.GetFileContent(
            ingest_pb2.GetFileContentRequest(knowledge_base=name, file_name=file_name),
            timeout=env.settings.request_timeout_s,
        )
        content_type = stored.content_type or "application/octet-stream"
        whole = _decoded(stored.content, content_type)
        if whole is None and not query:
            raise ToolError(
                f"{file_name!r} is {content_type}, not text: pass query to read its indexed chunks, "
                f"or download the original from {file_content_url(name, file_name)}"
            )
        found = FileContent(
            knowledge_base=name,
            file_name=stored.file_name or file_name,
            content_type=content_type,
            size=len(stored.content),
            url=file_content_url(name, file_name),
        )
        if whole is not None:
            page = whole[offset : offset + max_chars]
            end = offset + len(page)
            found.text, found.offset, found.total_chars = page, offset, len(whole)
            found.next_offset = end if end < len(whole) else None
        if query:
            _, passages = await lookup_and_search(
                env.clients,
                name,
                [],
                query,
                top_k=top_k or env.settings.default_top_k,
                score_threshold=0.0,
                timeout_s=env.settings.request_timeout_s,
                options=options_of(SearchRequest(query=query, file_names=[file_name])),
            )
            found.chunks = [FoundPassage.from_pb(p) for p in passages]
        return _result(found, found.text_view())

    return await run_tool("get_file_content", ctx, body)


TOOLS = (list_knowledge_bases, search, ask, get_file_content)
