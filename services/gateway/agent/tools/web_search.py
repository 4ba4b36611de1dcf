"""Internet search providers behind one interface, for ``search_internet``.

Each provider turns a query into :class:`WebResult` items (title, URL, snippet) over its own
HTTP API, configured by URL and key:

- ``searxng``: a SearXNG instance's JSON API (``GET {url}/search?q=...&format=json``; the
  instance must have ``json`` among its ``search.formats``); no key.
- ``bing``: Bing Web Search API v7 (``GET https://api.bing.microsoft.com/v7.0/search``, key in
  ``Ocp-Apim-Subscription-Key``).
- ``tavily``: Tavily's search API (``POST https://api.tavily.com/search``, key as Bearer token).
- ``duckduckgo``: DuckDuckGo's HTML endpoint (``POST https://html.duckduckgo.com/html/``), the
  no-JavaScript page; no key, parsed with selectolax (the approach of the ``ddgs`` library).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

import httpx
from selectolax.lexbor import LexborHTMLParser

from services.gateway.agent.tools.base import ToolError

DEFAULT_URLS = {
    "searxng": "",
    "bing": "https://api.bing.microsoft.com/v7.0/search",
    "tavily": "https://api.tavily.com/search",
    "duckduckgo": "https://html.duckduckgo.com/html/",
}
PROVIDERS = tuple(DEFAULT_URLS)
USER_AGENT = "Mozilla/5.0 (compatible; Zhiku-agent/0.1)"


@dataclass(frozen=True)
class WebResult:
    title: str
    url: str
    snippet: str


class SearchProvider(Protocol):
    @property
    def name(self) -> str: ...

    async def search(self, client: httpx.AsyncClient, query: str, max_results: int) -> list[WebResult]: ...


def _json(response: httpx.Response, provider: str) -> Any:
    if response.status_code >= 400:
        raise ToolError(f"the {provider} search answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ToolError(f"the {provider} search did not answer JSON") from None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _results(items: Any, title: str, url: str, snippet: str, max_results: int) -> list[WebResult]:
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and _text(item.get(url)):
            found.append(WebResult(_text(item.get(title)), _text(item.get(url)), _text(item.get(snippet))))
    return found[:max_results]


@dataclass(frozen=True)
class SearxngProvider:
    url: str
    name: str = "searxng"

    async def search(self, client: httpx.AsyncClient, query: str, max_results: int) -> list[WebResult]:
        response = await client.get(
            f"{self.url.rstrip('/')}/search", params={"q": query, "format": "json", "pageno": 1}
        )
        if response.status_code == 403:
            raise ToolError("the SearXNG instance refused format=json (enable json in its search.formats)")
        body = _json(response, self.name)
        return _results(body.get("results"), "title", "url", "content", max_results)


@dataclass(frozen=True)
class BingProvider:
    url: str
    api_key: str
    name: str = "bing"

    async def search(self, client: httpx.AsyncClient, query: str, max_results: int) -> list[WebResult]:
        response = await client.get(
            self.url,
            params={"q": query, "count": max_results, "textDecorations": "false", "textFormat": "Raw"},
            headers={"Ocp-Apim-Subscription-Key": self.api_key},
        )
        body = _json(response, self.name)
        pages = body.get("webPages") if isinstance(body, dict) else None
        return _results((pages or {}).get("value"), "name", "url", "snippet", max_results)


@dataclass(frozen=True)
class TavilyProvider:
    url: str
    api_key: str
    name: str = "tavily"

    async def search(self, client: httpx.AsyncClient, query: str, max_results: int) -> list[WebResult]:
        response = await client.post(
            self.url,
            json={"query": query, "max_results": max_results, "search_depth": "basic"},
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        body = _json(response, self.name)
        return _results(body.get("results") if isinstance(body, dict) else None, "title", "url", "content", max_results)


def _duckduckgo_target(href: str) -> str:
    """The result's own URL: DuckDuckGo links through ``/l/?uddg=<url>``."""
    parsed = urlparse(href)
    if parsed.path.startswith("/l/"):
        target = parse_qs(parsed.query).get("uddg")
        if target:
            return target[0]
    return f"https:{href}" if href.startswith("//") else href


@dataclass(frozen=True)
class DuckDuckGoProvider:
    url: str
    name: str = "duckduckgo"

    async def search(self, client: httpx.AsyncClient, query: str, max_results: int) -> list[WebResult]:
        response = await client.post(self.url, data={"q": query, "b": ""}, headers={"User-Agent": USER_AGENT})
        if response.status_code >= 400:
            raise ToolError(f"the duckduckgo search answered HTTP {response.status_code}")
        tree = LexborHTMLParser(response.text)
        found = []
        for result in tree.css("div.result"):
            if "result--ad" in (result.attributes.get("class") or ""):
                continue
            link = result.css_first("a.result__a")
            href = link.attributes.get("href") if link is not None else None
            if link is None or not href:
                continue
            snippet = result.css_first(".result__snippet")
            found.append(
                WebResult(
                    title=link.text(strip=True),
                    url=_duckduckgo_target(href),
                    snippet=snippet.text(strip=True) if snippet is not None else "",
                )
            )
        return found[:max_results]


def build_provider(name: str, url: str, api_key: str) -> SearchProvider:
    """The configured provider; ValueError when its URL or key is missing."""
    endpoint = url.strip() or DEFAULT_URLS.get(name, "")
    if name not in DEFAULT_URLS:
        raise ValueError(f"unknown search provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    if not endpoint:
        raise ValueError(f"the {name} search provider needs ZHIKU_GATEWAY_AGENT_SEARCH_URL")
    if name in ("bing", "tavily") and not api_key:
        raise ValueError(f"the {name} search provider needs ZHIKU_GATEWAY_AGENT_SEARCH_API_KEY")
    if name == "searxng":
        return SearxngProvider(endpoint)
    if name == "bing":
        return BingProvider(endpoint, api_key)
    if name == "tavily":
        return TavilyProvider(endpoint, api_key)
    return DuckDuckGoProvider(endpoint)
