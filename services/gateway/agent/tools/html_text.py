"""The readable text of an HTML page, for ``read_url``: the main content without page chrome.

selectolax (Lexbor) parses the page; scripts, styles, navigation, headers, footers, asides
and forms are dropped; ``<main>`` or ``<article>`` is preferred when the page has one with
text; block elements end lines and headings keep Markdown ``#`` marks, so the model sees the
page's structure. (Ingest's HTML parser does more for indexing; services do not share code.)
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser

DROPPED = "script, style, noscript, template, svg, iframe, object, canvas, nav, header, footer, aside, form"
BLOCKS = (
    "p, div, section, article, main, li, ul, ol, dl, dt, dd, h1, h2, h3, h4, h5, h6, tr, "
    "table, blockquote, pre, figure, figcaption, br, hr, address, details, summary, caption"
)
# <main>/<article> with fewer characters than this is a teaser, not the page's content.
MIN_MAIN_CHARS = 200


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of ``html``."""
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    for node in tree.css(DROPPED):
        node.decompose()
    for node in tree.css(BLOCKS):
        node.insert_before("\n")
        node.insert_after("\n")
    for level in range(1, 7):
        for node in tree.css(f"h{level}"):
            node.insert_before("#" * level + " ")
    for cell in tree.css("td, th"):
        cell.insert_after(" | ")
    root = tree.body or tree.root
    for selector in ("main", "article"):
        main = tree.css_first(selector)
        if main is not None and len(main.text(strip=True)) >= MIN_MAIN_CHARS:
            root = main
            break
    raw = root.text(separator="") if root is not None else ""
    lines = (re.sub(r"[ \t\u00a0\u3000]+", " ", line).strip() for line in raw.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return title, text
