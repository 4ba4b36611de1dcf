"""Markup: HTML pages, XML (RSS and Atom feeds, or any XML's text), EPUB e-books.

HTML keeps its structure as Markdown: ``h1``..``h6`` become ``#`` lines and tables become
Markdown rows under their header; scripts, styles and navigation are dropped.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

from services.ingest.documents.parsers.base import (
    ParseError,
    ParseLimits,
    Segment,
    decode_text,
    markdown_table,
    normalise,
    single,
)
from services.ingest.documents.parsers.zipsafe import check_container

_HTML_DROP = "script, style, noscript, template, svg, iframe, head, object, canvas, nav"
_HTML_BLOCKS = (
    "p, div, section, article, header, footer, aside, main, li, ul, ol, dl, dt, dd, "
    "h1, h2, h3, h4, h5, h6, tr, blockquote, pre, figure, figcaption, form, br, hr, "
    "address, details, summary, caption"
)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text as Markdown-ish plain text) of an HTML document."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    for node in tree.css(_HTML_DROP):
        node.decompose()
    # Innermost tables first (reverse document order), so a nested table becomes cell text.
    for table in reversed(tree.css("table")):
        rows = [
            [cell.text(separator=" ", strip=True) for cell in row.css("th, td")] for row in table.css("tr")
        ]
        table.replace_with(f"\n\n{markdown_table(rows)}\n\n")
    # Block elements end lines; inline ones (a, span, b) flow into their sentence.
    for node in tree.css(_HTML_BLOCKS):
        node.insert_before("\n")
        node.insert_after("\n")
    for level in range(1, 7):
        for node in tree.css(f"h{level}"):
            node.insert_before("#" * level + " ")
    root = tree.body or tree.root
    raw = root.text(separator="") if root is not None else ""
    lines = (re.sub(r"[ \t\u00a0\u3000]+", " ", line).strip() for line in raw.split("\n"))
    return title, normalise("\n".join(lines))


def parse_html(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    title, text = html_to_text(decode_text(name, data))
    return single(text, {"title": title} if title else {})


def _xml_root(name: str, data: bytes) -> Any:
    from lxml import etree

    # No entity expansion, no network, no DTD loading: XML from users must not reach outside.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise ParseError(f"{name}: invalid XML ({error})") from None


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _child_text(element: Any, *names: str) -> str:
    for child in element:
        if _local(child.tag) in names:
            text = "".join(child.itertext()).strip()
            if text:
                return text
    return ""


def parse_xml(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """RSS/Atom feeds become one heading per item with its date and text; other XML, its text."""
    root = _xml_root(name, data)
    items = [el for el in root.iter() if _local(el.tag) in ("item", "entry")]
    if not items:
        return single("\n".join(t.strip() for t in root.itertext() if t.strip()))
    channel = root.find("channel") if _local(root.tag) == "rss" else root
    feed_title = _child_text(channel, "title") if channel is not None else ""
    blocks = [f"# {feed_title}"] if feed_title else []
    for item in items:
        title = _child_text(item, "title")
        date = _child_text(item, "pubdate", "published", "updated", "date")
        body = _child_text(item, "encoded", "content") or _child_text(item, "description", "summary")
        if "<" in body:
            body = html_to_text(body)[1]
        block = [f"## {title}" if title else "", date, body]
        blocks.append("\n\n".join(part for part in block if part))
    return single("\n\n".join(blocks), {"title": feed_title} if feed_title else {})


def parse_epub(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """Chapters in reading (spine) order, one segment each (``chapter`` = position, 1-based)."""
    check_container(name, data, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        container = _xml_root(name, archive.read("META-INF/container.xml"))
        rootfile = next(
            (el.get("full-path") for el in container.iter() if _local(el.tag) == "rootfile"), None
        )
        if not rootfile:
            raise ParseError(f"{name}: not a readable EPUB (container.xml names no package file)")
        package = _xml_root(name, archive.read(rootfile))
        base = PurePosixPath(rootfile).parent
        manifest = {
            el.get("id"): el.get("href")
            for el in package.iter()
            if _local(el.tag) == "item" and el.get("id") and el.get("href")
        }
        spine = [el.get("idref") for el in package.iter() if _local(el.tag) == "itemref"]
        if len(spine) > limits.max_pages:
            raise ParseError(f"{name}: too many chapters ({len(spine)}, limit {limits.max_pages})")
        segments: list[Segment] = []
        for idref in spine:
            href = manifest.get(idref)
            if href is None:
                continue
            member = posixpath.normpath(str(base / unquote(href.split("#", 1)[0])))
            _, text = html_to_text(decode_text(name, archive.read(member)))
            if text:
                segments.append(Segment(text, {"chapter": str(len(segments) + 1)}))
    except ParseError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError) as error:
        raise ParseError(f"{name}: not a readable EPUB ({type(error).__name__}: {error})") from None
    return segments
