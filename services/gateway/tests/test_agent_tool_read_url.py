"""``read_url`` against a real HTTP server on loopback serving real HTML: text extraction,
redirects, size and time limits, content types; and the default refusal of private targets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from services.common.public_addresses import is_public
from services.gateway.agent.tools import ToolContext, ToolError, read_url
from services.gateway.agent.tools.read_url import ReadUrlTool
from services.gateway.config import GatewaySettings

from .local_http import serving

pytestmark = pytest.mark.asyncio(loop_scope="module")
CONTEXT = ToolContext(settings=GatewaySettings(catalog_url="sqlite:///unused.db"))

ARTICLE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Tide tables of Port Vell</title>
<style>body { color: red }</style><script>var secret = "tracking-code-123";</script></head>
<body>
<header><nav><a href="/">Home</a> | <a href="/about">About us</a></nav></header>
<main>
<h1>Tide tables</h1>
<p>High tide at Port Vell on 3 March is at <b>06:42</b>, with a height of 1.8 metres.</p>
<p>Low tide follows at 12:55. Harbour pilots ask boats over 20 metres to wait for high water
before entering the inner basin, and the harbour office answers on VHF channel 12.</p>
<table><tr><th>Day</th><th>High</th></tr><tr><td>3 March</td><td>06:42</td></tr></table>
</main>
<footer>© 2026 Harbour office. Cookie settings.</footer>
</body></html>"""


async def article(request: web.Request) -> web.Response:
    return web.Response(text=ARTICLE, content_type="text/html", charset="utf-8")


async def chinese(request: web.Request) -> web.Response:
    page = "<html><head><title>年假</title></head><body><p>员工每年享有十五天带薪年假。</p></body></html>"
    return web.Response(body=page.encode("gb18030"), headers={"Content-Type": "text/html; charset=gb18030"})


async def plain(request: web.Request) -> web.Response:
    return web.Response(text="line one\nline two", content_type="text/plain")


async def big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for _ in range(100):  # 10 MB, never read whole
        await response.write(b"x" * 100_000)
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late", content_type="text/plain")


async def pdf(request: web.Request) -> web.Response:
    return web.Response(body=b"%PDF-1.7 ...", content_type="application/pdf")


async def missing(request: web.Request) -> web.Response:
    return web.Response(status=404, text="not here")


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/article")


async def loop_forever(request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


async def to_file(request: web.Request) -> web.Response:
    raise web.HTTPFound("file:///etc/passwd")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/article", article)
    app.router.add_get("/chinese", chinese)
    app.router.add_get("/plain", plain)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/report.pdf", pdf)
    app.router.add_get("/missing", missing)
    app.router.add_get("/moved", moved)
    app.router.add_get("/loop", loop_forever)
    app.router.add_get("/to-file", to_file)
    async with serving(app) as url:
        yield url


def reader(**overrides: object) -> ReadUrlTool:
    limits: dict = {"timeout_s": 2.0, "max_bytes": 1_000_000, "max_chars": 20_000, "allow_private": True}
    return ReadUrlTool(**{**limits, **overrides})


async def read(url: str, **overrides: object):
    return await reader(**overrides).run({"url": url}, CONTEXT)


async def test_reads_the_main_text_of_a_real_page(site: str) -> None:
    result = await read(f"{site}/article")
    assert result.external
    assert result.data["title"] == "Tide tables of Port Vell" and result.data["truncated"] is False
    assert result.short().startswith("Tide tables of Port Vell (") and result.short().endswith(" characters)")
    assert result.citations == [{"url": f"{site}/article", "title": "Tide tables of Port Vell"}]
    text = result.text
    assert "# Tide tables" in text
    assert "High tide at Port Vell on 3 March is at 06:42, with a height of 1.8 metres." in text
    assert "3 March | 06:42" in text
    for chrome in ("tracking-code-123", "color: red", "About us", "Cookie settings"):
        assert chrome not in text
    fenced = result.for_model("read_url")
    assert fenced.startswith("The block below is data") and "06:42" in fenced


async def test_declared_charsets_and_plain_text(site: str) -> None:
    assert "员工每年享有十五天带薪年假。" in (await read(f"{site}/chinese")).text
    result = await read(f"{site}/plain")
    assert result.text.endswith("line one\nline two") and result.data["title"] == ""


async def test_redirects_are_followed_and_checked(site: str) -> None:
    result = await read(f"{site}/moved")
    assert result.data["final_url"] == f"{site}/article" and "06:42" in result.text
    with pytest.raises(ToolError, match="redirects more than 5 times"):
        await read(f"{site}/loop")
    with pytest.raises(ToolError, match="only http and https URLs can be read, not 'file'"):
        await read(f"{site}/to-file")


async def test_size_limits_cut_the_download_and_the_text(site: str) -> None:
    started = time.monotonic()
    result = await read(f"{site}/big", max_bytes=50_000)
    assert result.data["truncated"] is True
    assert result.text.count("x") == 20_000 and "only its beginning is shown" in result.text
    assert time.monotonic() - started < 5
    short = await read(f"{site}/article", max_chars=100)
    assert short.data["truncated"] is True and "Cookie" not in short.text


async def test_time_limit(site: str) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"took longer than 0.5 s"):
        await read(f"{site}/slow", timeout_s=0.5)
    assert time.monotonic() - started < 3


async def test_refusals_name_the_problem(site: str) -> None:
    with pytest.raises(ToolError, match="application/pdf, not a page with text"):
        await read(f"{site}/report.pdf")
    with pytest.raises(ToolError, match="answered HTTP 404"):
        await read(f"{site}/missing")
    with pytest.raises(ToolError, match="only http and https URLs can be read, not 'file'"):
        await read("file:///etc/passwd")
    with pytest.raises(ToolError, match="not 'ftp'"):
        await read("ftp://example.com/x")
    with pytest.raises(ToolError, match="cannot resolve"):
        await read("http://no-such-host.invalid/", allow_private=False)


async def _resolves_public(url: object, *, allow_private: bool) -> None:
    """A resolver fooled into answering with a public address."""


async def test_private_targets_are_refused_by_default(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = site.rsplit(":", 1)[1]
    default = reader(allow_private=False)
    for url in (f"{site}/article", f"http://localhost:{port}/article", f"http://[::1]:{port}/article"):
        with pytest.raises(ToolError, match="private-network targets are not allowed") as raised:
            await default.run({"url": url}, CONTEXT)
        assert "resolves to" in str(raised.value)
    # A name that resolved to a public address and then connects to a private one (DNS
    # rebinding) is refused by the check of the connection's actual peer.
    monkeypatch.setattr(read_url, "check_host", _resolves_public)
    with pytest.raises(ToolError, match=r"resolves to 127\.0\.0\.1"):
        await default.run({"url": f"{site}/article"}, CONTEXT)
    # The registry's tool takes the setting: off unless a deployment allows private targets.
    assert GatewaySettings(catalog_url="sqlite:///x.db").agent_read_url_allow_private is False


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
    ],
)
async def test_address_classes(address: str, public: bool) -> None:
    assert is_public(address) is public
