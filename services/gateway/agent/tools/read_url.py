"""``read_url``: fetch one web page and give the model its text, within size and time limits.

Only http(s), only public addresses unless allowed (:mod:`url_safety`, checked again on every
redirect and on the connection itself), at most ``max_bytes`` read (the rest is never
downloaded), at most ``timeout_s`` for the whole fetch, redirects followed by hand (at most
``MAX_REDIRECTS``). HTML becomes its readable text (:mod:`html_text`); plain text, JSON and
XML are shown as they are; other types (PDF, images) are refused with their type named. The
page is outside content: the result is ``external``.

Environment proxies are not used: the address check must see the real peer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from charset_normalizer import from_bytes
from pydantic import Field

from services.gateway.agent.tools.base import (
    Arguments,
    ToolContext,
    ToolError,
    ToolResult,
    parameters_of,
    parse_arguments,
)
from services.gateway.agent.tools.html_text import html_to_text
from services.gateway.agent.tools.url_safety import check_host, check_peer, checked_url

MAX_REDIRECTS = 5
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/rss+xml", "application/atom+xml")
USER_AGENT = "Zhiku-agent/0.1 (read_url)"


class ReadUrlArguments(Arguments):
    url: str = Field(description="The http or https URL of the page to read.", min_length=1, max_length=4000)


def _decode(body: bytes, declared: str | None) -> str:
    if declared:
        try:
            return body.decode(declared)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        best = from_bytes(body).best()
        return str(best) if best is not None else body.decode("utf-8", errors="replace")


class ReadUrlTool:
    name = "read_url"
    description = (
        "Fetch a web page (http or https) and return its readable text. Use it to read a page "
        "found by search_internet or given by the user."
    )
    parameters = parameters_of(ReadUrlArguments)

    def __init__(self, *, timeout_s: float, max_bytes: int, max_chars: int, allow_private: bool) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self.allow_private = allow_private

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        url = checked_url(parse_arguments(ReadUrlArguments, arguments).url)
        try:
            async with asyncio.timeout(self.timeout_s):
                final_url, content_type, charset, body, cut = await self._fetch(url)
        except TimeoutError:
            raise ToolError(f"reading {url} took longer than {self.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise ToolError(f"cannot read {url}: {type(error).__name__}: {error}") from None
        text = _decode(body, charset)
        if content_type in HTML_TYPES:
            title, text = html_to_text(text)
        elif content_type.startswith(TEXT_TYPES):
            title = ""
        else:
            raise ToolError(f"{final_url} is {content_type or 'of unknown type'}, not a page with text")
        truncated = cut or len(text) > self.max_chars
        text = text[: self.max_chars]
        header = f"{title}\n{final_url}\n\n" if title else f"{final_url}\n\n"
        tail = "\n\n[the page is longer; only its beginning is shown]" if truncated else ""
        return ToolResult(
            text=f"{header}{text}{tail}",
            data={"url": str(url), "final_url": final_url, "title": title, "truncated": truncated},
            citations=[{"url": final_url, "title": title}],
            external=True,
            summary=f"{title or final_url} ({len(text)} characters{', cut' if truncated else ''})",
        )

    async def _fetch(self, url: httpx.URL) -> tuple[str, str, str | None, bytes, bool]:
        """(final URL, content type, declared charset, body up to max_bytes, whether it was cut)."""
        async with httpx.AsyncClient(
            timeout=self.timeout_s, follow_redirects=False, trust_env=False, headers={"User-Agent": USER_AGENT}
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                await check_host(url, allow_private=self.allow_private)
                async with client.stream("GET", url) as response:
                    check_peer(response, allow_private=self.allow_private)
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        url = checked_url(str(response.url.join(location)))
                        continue
                    if response.status_code >= 400:
                        raise ToolError(f"{url} answered HTTP {response.status_code}")
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    body = bytearray()
                    cut = False
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > self.max_bytes:
                            del body[self.max_bytes :]
                            cut = True
                            break
                    return str(response.url), content_type, response.charset_encoding, bytes(body), cut
        raise ToolError(f"{url} redirects more than {MAX_REDIRECTS} times")
