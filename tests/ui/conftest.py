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
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from launcher.stack import BackgroundStack, launch_in_background

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "ui"
CHROMIUM = Path(os.environ.get("ZHIKU_TEST_CHROMIUM", "/usr/bin/chromium"))
API_KEY = "zhiku-ui-test-key"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


def launch_ui_stack(
    data_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None, **generate: str
) -> BackgroundStack:
    """The stack with the fast ``use`` embedder and an API key; ``generate`` settings
    (``backend="openai"``...) replace the ``extractive`` generator; ``extra_env`` adds any
    other setting (``ZHIKU_INGEST_SOURCES_ROOT``...)."""
    env = {
        "ZHIKU_EMBED_LOCAL_MODEL": "use",
        "ZHIKU_GENERATE_BACKEND": "extractive",
        "ZHIKU_GATEWAY_API_KEYS": API_KEY,
        **{f"ZHIKU_GENERATE_{name.upper()}": value for name, value in generate.items()},
        **(extra_env or {}),
    }
    try:
        return launch_in_background(data_dir, log_path, env)
    except RuntimeError as error:
        pytest.fail(str(error))


def gateway_client(stack: BackgroundStack) -> httpx.Client:
    """The stack's gateway over plain HTTP with the key, to check what the UI did."""
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[BackgroundStack]:
    running = launch_ui_stack(tmp_path_factory.mktemp("zhiku-ui"), output_dir / "stack.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(ui_stack: BackgroundStack) -> Iterator[httpx.Client]:
    """The same gateway over plain HTTP, to check what the UI did."""
    with gateway_client(ui_stack) as client:
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


def enter_key_when_asked(page: Page) -> None:
    """Answer the 401 with the key: in the key dialog, or through the sign-in page's "use an
    API key instead" where the gateway also lets people sign in."""
    dialog = page.get_by_test_id("api-key-dialog")
    signin = page.get_by_test_id("signin-page")
    expect(dialog.or_(signin)).to_be_visible()
    if signin.is_visible():
        signin.get_by_test_id("signin-use-key").click()
    expect(dialog).to_be_visible()
    dialog.get_by_test_id("prompt-input").fill(API_KEY)
    dialog.get_by_test_id("prompt-ok").click()
    expect(dialog).to_have_count(0)


def ingest(api: httpx.Client, kb: str, files: dict[str, str]) -> None:
    """A knowledge base with ``files``, through the API, waited for (hang guard: 120 s)."""
    api.post("/v1/knowledge_bases", json={"name": kb}).raise_for_status()
    uploads = [("files", (name, text.encode(), "text/plain")) for name, text in files.items()]
    reply = api.post(f"/v1/knowledge_bases/{kb}/files", files=uploads)
    reply.raise_for_status()
    for job in reply.json()["jobs"]:
        deadline = time.monotonic() + 120
        while (state := api.get(f"/v1/jobs/{job['id']}").json()["state"]) not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"job {job['id']} still {state}"
            time.sleep(0.2)
        assert state == "succeeded"
