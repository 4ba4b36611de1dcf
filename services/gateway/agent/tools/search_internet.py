"""``search_internet``: a web search through the configured provider (:mod:`web_search`).

Results (title, URL, snippet) come from outside, so the result is ``external``; each result
is also a citation, so an answer can link to the pages.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field

from services.gateway.agent.tools.base import (
    Arguments,
    ToolContext,
    ToolError,
    ToolResult,
    parameters_of,
    parse_arguments,
)
from services.gateway.agent.tools.web_search import SearchProvider

MAX_RESULTS = 20


class SearchInternetArguments(Arguments):
    query: str = Field(description="The web search query.", min_length=1, max_length=500)
    max_results: int | None = Field(default=None, ge=1, le=MAX_RESULTS, description="How many results.")


class SearchInternetTool:
    name = "search_internet"
    description = (
        "Search the internet and return result titles, URLs and snippets. Use read_url to read "
        "a result's page when the snippet is not enough."
    )
    parameters = parameters_of(SearchInternetArguments)

    def __init__(self, provider: SearchProvider, *, timeout_s: float, max_results: int) -> None:
        self.provider = provider
        self.timeout_s = timeout_s
        self.max_results = max_results

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        args = parse_arguments(SearchInternetArguments, arguments)
        count = args.max_results or self.max_results
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                results = await self.provider.search(client, args.query, count)
        except httpx.TimeoutException:
            raise ToolError(f"the {self.provider.name} search took longer than {self.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise ToolError(f"the {self.provider.name} search failed: {type(error).__name__}: {error}") from None
        hits = [{"title": r.title, "url": r.url, "snippet": r.snippet} for r in results]
        if hits:
            text = "\n\n".join(
                f"[{number}] {hit['title']}\n{hit['url']}\n{hit['snippet']}" for number, hit in enumerate(hits, 1)
            )
        else:
            text = "The search found nothing."
        return ToolResult(
            text=text,
            data={"query": args.query, "provider": self.provider.name, "results": hits},
            citations=[{"title": hit["title"], "url": hit["url"]} for hit in hits],
            external=True,
            summary=f"{len(hits)} result(s) from {self.provider.name}",
        )
