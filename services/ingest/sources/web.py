"""A web site: the pages of a sitemap, or those reached from a start URL within a link depth.

Only pages of the start URL's (or sitemap's) host are fetched, robots.txt is honoured for the
user agent ``zhiku``, the number of pages and each page's size are bounded, and only public
addresses are contacted unless private networks are allowed (``services.ingest.sources.network``).
Pages are crawled in full before the sync compares anything, so an unreachable start URL fails
the sync without touching what earlier syncs indexed. A page's file name is its URL path,
flattened (``/docs/a`` -> ``docs__a.html``; the site's root -> ``index.html``).
"""

from __future__ import annotations

import posixpath
import urllib.robotparser
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx
import lxml.etree
import lxml.html

from services.ingest.sources.items import ItemUnavailable, SourceItem, SourceUnavailable, file_name_for
from services.ingest.sources.network import check_request, check_response

USER_AGENT = "zhiku"
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class Page:
    url: str
    content_type: str
    body: bytes

    @property
    def is_html(self) -> bool:
        return self.content_type in HTML_TYPES


def page_file_name(url: str, is_html: bool) -> str:
    path = urlsplit(url).path
    if not path or path.endswith("/"):
        path += "index.html"
    elif is_html and not posixpath.splitext(path)[1]:
        path += ".html"
    return file_name_for(path)


def _same_site(url: str, host: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.netloc == host


class WebConnector:
    def __init__(
        self,
        start_url: str,
        sitemap_url: str,
        max_depth: int,
        max_pages: int,
        max_bytes: int,
        timeout_s: float,
        allow_private: bool = False,
    ) -> None:
        self.start_url = start_url
        self.sitemap_url = sitemap_url
        self.max_depth = max_depth
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.allow_private = allow_private

    def list_items(self) -> list[SourceItem]:
        entry = self.sitemap_url or self.start_url
        host = urlsplit(entry).netloc
        hooks: dict[str, list[Callable[..., object]]] = (
            {} if self.allow_private else {"request": [check_request], "response": [check_response]}
        )
        with httpx.Client(
            follow_redirects=True,
            timeout=self.timeout_s,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
            event_hooks=hooks,
        ) as client:
            robots = self._robots(client, entry)
            if self.sitemap_url:
                return self._sitemap(client, robots, host)
            return self._crawl(client, robots, host)

    def _robots(self, client: httpx.Client, entry: str) -> urllib.robotparser.RobotFileParser:
        parser = urllib.robotparser.RobotFileParser()
        try:
            reply = client.get(urljoin(entry, "/robots.txt"))
        except httpx.HTTPError as error:
            raise SourceUnavailable(f"cannot reach {entry}: {error}") from None
        # As browsers and crawlers do: no robots.txt (404) allows everything.
        parser.parse(reply.text.splitlines() if reply.status_code == 200 else [])
        return parser

    def _get(self, client: httpx.Client, url: str) -> Page:
        """The page, or ItemUnavailable saying why not (status, size, network, address)."""
        try:
            with client.stream("GET", url) as reply:
                if reply.status_code != 200:
                    raise ItemUnavailable(f"HTTP {reply.status_code} from {url}")
                declared = int(reply.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise ItemUnavailable(f"{declared} bytes; the page limit is {self.max_bytes}")
                body = bytearray()
                for part in reply.iter_bytes():
                    body += part
                    if len(body) > self.max_bytes:
                        raise ItemUnavailable(f"over the page limit of {self.max_bytes} bytes")
                content_type = reply.headers.get("content-type", "").split(";")[0].strip().lower()
                return Page(str(reply.url), content_type, bytes(body))
        except httpx.HTTPError as error:
            raise ItemUnavailable(f"cannot fetch {url}: {error}") from None

    @staticmethod
    def _item(url: str, page: Page) -> SourceItem:
        body = page.body
        return SourceItem(url, page_file_name(url, page.is_html), lambda: body)

    def _crawl(
        self, client: httpx.Client, robots: urllib.robotparser.RobotFileParser, host: str
    ) -> list[SourceItem]:
        start = urldefrag(self.start_url)[0]
        try:
            first = self._get(client, start)
        except ItemUnavailable as error:
            raise SourceUnavailable(f"start URL: {error}") from None
        items: list[SourceItem] = []
        seen = {start}
        queue: deque[tuple[str, Page | None, int]] = deque([(start, first, 0)])
        while queue and len(items) < self.max_pages:
            url, page, depth = queue.popleft()
            if page is None:
                try:
                    page = self._get(client, url)
                except ItemUnavailable as error:
                    items.append(SourceItem(url, page_file_name(url, True), _failing(str(error))))
                    continue
            items.append(self._item(url, page))
            if depth >= self.max_depth or not page.is_html:
                continue
            for link in _links(page.body):
                target = urldefrag(urljoin(page.url, link))[0]
                if target in seen or not _same_site(target, host) or not robots.can_fetch(USER_AGENT, target):
                    continue
                seen.add(target)
                queue.append((target, None, depth + 1))
        return items

    def _sitemap(
        self, client: httpx.Client, robots: urllib.robotparser.RobotFileParser, host: str
    ) -> list[SourceItem]:
        try:
            page = self._get(client, self.sitemap_url)
            root = lxml.etree.fromstring(
                page.body, parser=lxml.etree.XMLParser(resolve_entities=False, no_network=True)
            )
        except (ItemUnavailable, lxml.etree.XMLSyntaxError) as error:
            raise SourceUnavailable(f"sitemap: {error}") from None
        urls = [loc.text.strip() for loc in root.iter("{*}loc") if loc.text]
        items: list[SourceItem] = []
        for url in urls:
            if len(items) >= self.max_pages:
                break
            if not _same_site(url, host) or not robots.can_fetch(USER_AGENT, url):
                continue
            try:
                items.append(self._item(url, self._get(client, url)))
            except ItemUnavailable as error:
                items.append(SourceItem(url, page_file_name(url, True), _failing(str(error))))
        return items


def _failing(reason: str) -> Callable[[], bytes]:
    def fetch() -> bytes:
        raise ItemUnavailable(reason)

    return fetch


def _links(body: bytes) -> list[str]:
    try:
        document = lxml.html.fromstring(body)
    except (lxml.etree.ParserError, ValueError):
        return []
    return [str(href) for href in document.xpath("//a/@href")]
