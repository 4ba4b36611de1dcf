"""Browser tests: the stack started as ``make run`` does, driven through Debian's chromium.

Playwright's Python package drives ``/usr/bin/chromium`` (installed by
scripts/ensure-services.sh); it never downloads a browser of its own. The stack runs with an
API key so the UI's key entry is part of every test, the fast ``use`` embedder and the
``extractive`` generator (streamed like any other backend, no LLM to load). Screenshots go to
``test-output/ui/``. Stack and browser live for one module: they are gone before the rest of
``make test`` runs (Playwright's sync API must not outlive into other tests' event loops).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from services.stack import BackgroundStack, launch_in_background

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "ui"
CHROMIUM = Path(os.environ.get("ZHIKU_TEST_CHROMIUM", "/usr/bin/chromium"))
API_KEY = "zhiku-ui-test-key"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[BackgroundStack]:
    env = {
        "ZHIKU_EMBED_LOCAL_MODEL": "use",
        "ZHIKU_GENERATE_BACKEND": "extractive",
        "ZHIKU_GATEWAY_API_KEYS": API_KEY,
    }
    try:
        running = launch_in_background(tmp_path_factory.mktemp("zhiku-ui"), output_dir / "stack.log", env)
    except RuntimeError as error:
        pytest.fail(str(error))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(ui_stack: BackgroundStack) -> Iterator[httpx.Client]:
    """The same gateway over plain HTTP, to check what the UI did."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=ui_stack.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-services.sh (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (empty localStorage) per test, so tests do not share a key."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    context.set_default_timeout(30_000)
    opened = context.new_page()
    yield opened
    context.close()
