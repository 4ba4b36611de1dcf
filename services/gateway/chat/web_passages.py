"""Search-engine chat: a web search's results as the passages of a grounded answer.

The provider is the agent's (``ZHIKU_GATEWAY_AGENT_SEARCH_PROVIDER`` / ``_URL`` / ``_API_KEY``,
:mod:`services.gateway.agent.tools.web_search`): this module only picks it for a request and
turns its results (title, URL, snippet) into ``Passage`` messages, so the generate service
answers from them exactly as from a knowledge base (numbered, fenced as data, cited with
``[n]``, abstaining when they do not answer, each sentence checked). Only the configured
provider is ever contacted: naming another is refused, so a deployment decides whether and
where its gateway reaches out to the web.

A provider that fails or does not answer in time (``ZHIKU_GATEWAY_AGENT_TOOL_TIMEOUT_S``) is a
502 or 504 naming it.
"""

from __future__ import annotations

import httpx

from services.gateway.agent.tools.base import ToolError
from services.gateway.agent.tools.web_search import PROVIDERS, SearchProvider, WebResult, build_provider
from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError
from zhiku.v1 import common_pb2

# Passage metadata keys that carry the page (a web passage has no knowledge base or file).
URL_KEY = "url"
TITLE_KEY = "title"


class UnknownSearchEngine(HttpApiError):
    """A ``search_engine`` that is no provider at all (Chatchat answers these its own way)."""


def requested_engine(search_engine: bool | str | None) -> str | None:
    """The provider name asked for: None for no web search, "" for the configured one."""
    if search_engine is None or search_engine is False or search_engine == "":
        return None
    return "" if search_engine is True else str(search_engine).strip().lower()


def provider_for(requested: str, settings: GatewaySettings) -> SearchProvider:
    """The configured provider, when ``requested`` ("" = whichever is configured) names it."""
    configured = settings.agent_search_provider
    if requested and requested not in PROVIDERS:
        raise UnknownSearchEngine(
            422,
            f"unknown search engine {requested!r}; choose one of {', '.join(PROVIDERS)}",
            param="search_engine",
        )
    if requested and requested != configured:
        raise HttpApiError(
            400,
            f"the {requested} search engine is not configured on this gateway; it searches with "
            f"{configured} (ZHIKU_GATEWAY_AGENT_SEARCH_PROVIDER)",
            param="search_engine",
        )
    try:
        return build_provider(configured, settings.agent_search_url, settings.agent_search_api_key)
    except ValueError as error:
        raise HttpApiError(
            400, f"search-engine chat is not configured on this gateway: {error}", param="search_engine"
        ) from None


async def search_web(provider: SearchProvider, query: str, count: int, timeout_s: float) -> list[WebResult]:
    """The provider's results; its failures as 502 (answered badly, unreachable) or 504 (too slow)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            return await provider.search(client, query, count)
    except httpx.TimeoutException:
        raise HttpApiError(
            504, f"the {provider.name} search engine did not answer within {timeout_s:g} s"
        ) from None
    except httpx.HTTPError as error:
        raise HttpApiError(
            502, f"the {provider.name} search engine is unreachable: {type(error).__name__}: {error}"
        ) from None
    except ToolError as error:
        raise HttpApiError(502, f"the {provider.name} search engine failed: {error}") from None


def as_passages(results: list[WebResult], provider: str) -> list[common_pb2.Passage]:
    """One passage per result: its snippet as the text (the title when it has none), its title
    as the source the prompt shows; score falls with rank (providers give no absolute score)."""
    return [
        common_pb2.Passage(
            chunk_id=result.url,
            file_name=result.title or result.url,
            chunk_index=rank,
            text=result.snippet or result.title,
            score=1.0 / (rank + 1),
            metadata={URL_KEY: result.url, TITLE_KEY: result.title, "search_engine": provider},
        )
        for rank, result in enumerate(results)
        if result.snippet or result.title
    ]


def web_citation(passage: common_pb2.Passage) -> dict[str, object]:
    """A web passage as a citation: the page's title and URL, and the snippet answered from."""
    return {
        "title": passage.metadata.get(TITLE_KEY, ""),
        "url": passage.metadata.get(URL_KEY, ""),
        "text": passage.text,
        "score": round(passage.score, 6),
    }
