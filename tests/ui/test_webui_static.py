"""The gateway serves the committed web UI bundle at ``/``, open even when API keys are set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.webui import STATIC_DIR, mount_webui

ASSET = re.compile(r'(?:src|href)="(/ui/assets/[^"]+)"')


@pytest.fixture
def keyed_client(tmp_path: Path) -> TestClient:
    # No lifespan (no ``with``): the UI needs no backend, and the API answers 401 before one.
    settings = GatewaySettings(api_keys=["ui-test-key"], catalog_url=f"sqlite:///{tmp_path / 'gw.db'}")
    return TestClient(create_app(settings))


def test_committed_bundle_exists() -> None:
    index = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assets = ASSET.findall(index)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), index
    for asset in assets:
        assert (STATIC_DIR / asset.removeprefix("/ui/")).is_file(), f"{asset} named by index.html is missing"


def test_root_serves_the_page_and_assets_without_a_key(keyed_client: TestClient) -> None:
    page = keyed_client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert '<div id="app">' in page.text
    for asset in ASSET.findall(page.text):
        reply = keyed_client.get(asset)
        assert reply.status_code == 200, asset
        expected = "javascript" if asset.endswith(".js") else "css"
        assert expected in reply.headers["content-type"]
    # The API itself still needs the key: the UI asks for it on this 401.
    denied = keyed_client.get("/v1/knowledge_bases")
    assert denied.status_code == 401
    assert "API key" in denied.json()["error"]["message"]


def test_api_routes_win_over_the_ui(keyed_client: TestClient) -> None:
    assert keyed_client.get("/healthz").status_code == 200
    assert keyed_client.get("/ui/assets/nope.js").status_code == 404
    # An escaped traversal stays inside the bundle folder.
    assert keyed_client.get("/ui/%2e%2e/%2e%2e/%2e%2e/pyproject.toml").status_code == 404


def test_missing_bundle_is_a_clear_503(tmp_path: Path) -> None:
    from fastapi import FastAPI

    app = FastAPI()
    mount_webui(app, tmp_path / "absent")
    reply = TestClient(app).get("/")
    assert reply.status_code == 503
    assert "make webui" in reply.text
