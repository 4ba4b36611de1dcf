"""Unsupported sentences marked in the web UI, from a real stack whose generate service runs
the ``openai`` backend against the OpenAI-protocol test server, scripted to answer with two
sentences the uploaded passage holds and one it does not (all three cite [1]).

The extractive default never says anything its passages do not, so this module needs a model
that can: the test server plays one, over real HTTP and server-sent events, in its own process.
The invented sentence sits in a Markdown list item and crosses bold text, so the marking has
to survive the Markdown rendering.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from launcher.stack import BackgroundStack, free_port
from tests.ui.conftest import REPO, enter_key_when_asked, gateway_client, ingest, launch_ui_stack

PARKING = (
    "Visitor parking. Visitors park in garage B, level two. The garage gate opens at six in the "
    "morning and closes at midnight.\n"
)
ANSWER = (
    "Visitors park in garage B, level two [1].\n\n"
    "- Electric cars park **for free** on weekends [1].\n"
    "- The garage gate opens at six in the morning [1]."
)
INVENTED = "Electric cars park for free on weekends"
QUESTION = "Where do visitors park?"
KB = "ui-parking"
UPSTREAM_KEY = "fake-upstream-key"
FAKE_OPENAI = [sys.executable, "-m", "testing.fake_openai"]


@pytest.fixture(scope="module")
def upstream(output_dir: Path) -> Iterator[str]:
    """The test server as its own process, answering every chat with ANSWER."""
    port = free_port()
    with (output_dir / "fake-openai.log").open("wb") as log:
        process = subprocess.Popen(
            [*FAKE_OPENAI, "--port", str(port), "--api-key", UPSTREAM_KEY, "--script", ANSWER],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60  # hang guard
        while True:
            assert process.poll() is None, "the fake OpenAI server exited; see test-output/ui/fake-openai.log"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the fake OpenAI server did not listen"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def scripted_stack(
    upstream: str, tmp_path_factory: pytest.TempPathFactory, output_dir: Path
) -> Iterator[BackgroundStack]:
    running = launch_ui_stack(
        tmp_path_factory.mktemp("zhiku-ui-scripted"),
        output_dir / "stack-scripted.log",
        backend="openai",
        openai_base_url=upstream,
        openai_api_key=UPSTREAM_KEY,
        openai_model="fake-model",
        openai_max_retries="0",
        # Follow-ups are made standalone from the earlier questions' terms: the scripted model
        # would answer a condense prompt with ANSWER.
        query_rewrite="terms",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(scripted_stack: BackgroundStack) -> Iterator[httpx.Client]:
    with gateway_client(scripted_stack) as client:
        yield client


@pytest.fixture(scope="module")
def parking_kb(api: httpx.Client) -> str:
    ingest(api, KB, {"parking.txt": PARKING})
    return KB


def marked_text(answer: Locator) -> str:
    return " ".join(" ".join(answer.get_by_test_id("unsupported").all_inner_texts()).split())


def ask(page: Page, question: str) -> Locator:
    page.get_by_test_id("chat-input").fill(question)
    page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("assistant-message").last
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    return answer


def check_marking(answer: Locator, title: str) -> None:
    """Only the invented sentence is marked, every piece of it, and the Markdown is intact."""
    body = answer.get_by_test_id("answer")
    expect(body.locator("li")).to_have_count(2)
    expect(body.locator("li strong")).to_have_text("for free")
    marks = answer.get_by_test_id("unsupported")
    expect(marks.first).to_be_visible()
    # The sentence crosses <strong>, so it is marked in pieces, all of sentence 0.
    assert {marks.nth(i).get_attribute("data-sentence") for i in range(marks.count())} == {"0"}
    assert {marks.nth(i).get_attribute("title") for i in range(marks.count())} == {title}
    assert marked_text(answer).startswith(INVENTED), marked_text(answer)
    # The true sentences are not marked; the [1] markers still open source 1.
    assert "garage" not in marked_text(answer)
    expect(body.locator("p").first.get_by_test_id("unsupported")).to_have_count(0)
    expect(body.locator("li").nth(1).get_by_test_id("unsupported")).to_have_count(0)
    expect(body.locator("button.cite")).to_have_count(3)
    expect(answer.get_by_test_id("unsupported-note")).to_be_visible()
    # The passage backs the two true sentences that cite it.
    expect(answer.get_by_test_id("source").first).to_have_attribute("data-support", "supported")


def open_chat(page: Page, base: str, kb: str) -> None:
    page.goto(f"{base}/#/chat")
    enter_key_when_asked(page)
    page.get_by_test_id("chat-mode").select_option("kb")
    page.get_by_test_id("chat-kb").select_option(kb)


def test_an_invented_sentence_is_marked_and_a_true_one_is_not(
    page: Page, api: httpx.Client, parking_kb: str, output_dir: Path
) -> None:
    open_chat(page, str(api.base_url).rstrip("/"), parking_kb)
    conversations_before = {c["id"] for c in api.get("/v1/conversations").json()["data"]}
    answer = ask(page, QUESTION)
    expect(answer.get_by_test_id("answer")).to_contain_text("Visitors park in garage B")
    check_marking(answer, "No cited passage supports this sentence")
    expect(answer.get_by_test_id("unsupported-note")).to_have_text(
        "No cited passage supports the underlined sentence."
    )
    expect(answer.get_by_test_id("retrieval-query")).to_have_count(0)  # searched as asked
    answer.screenshot(path=str(output_dir / "chat-unsupported-answer.png"))
    page.screenshot(path=str(output_dir / "chat-unsupported.png"), full_page=True)

    # The stored answer keeps the offsets, so reopening the conversation marks it again.
    listed = api.get("/v1/conversations").json()["data"]
    [conversation] = [c for c in listed if c["id"] not in conversations_before]
    stored = api.get(f"/v1/conversations/{conversation['id']}").json()["messages"][-1]
    [unsupported] = stored["unsupported"]
    assert stored["content"][unsupported["start"] : unsupported["end"]] == unsupported["text"]
    assert stored["abstained"] is False and stored["retrieval_query"] == QUESTION
    page.get_by_test_id("conversation-new").click()
    expect(page.get_by_test_id("assistant-message")).to_have_count(0)
    page.get_by_test_id("conversation-item").first.locator("button.title").click()
    check_marking(page.get_by_test_id("assistant-message").last, "No cited passage supports this sentence")

    # A follow-up is searched with the earlier question's terms, and the sources say so.
    follow_up = "When does it open?"
    answer = ask(page, follow_up)
    searched = answer.get_by_test_id("retrieval-query")
    expect(searched).to_contain_text("searched for:")
    expect(searched).to_contain_text(follow_up)
    assert re.search(r"visitors|park", searched.inner_text(), re.I), searched.inner_text()
    answer.screenshot(path=str(output_dir / "chat-follow-up-searched.png"))


def test_marking_in_chinese_on_a_narrow_screen(
    page: Page, api: httpx.Client, parking_kb: str, output_dir: Path
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_chat(page, str(api.base_url).rstrip("/"), parking_kb)
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("chat-send")).to_have_text("发送")
    answer = ask(page, QUESTION)
    check_marking(answer, "没有引用的段落支持这句话")
    expect(answer.get_by_test_id("unsupported-note")).to_have_text("带下划线的这句话没有引用的段落支持。")
    expect(answer.get_by_test_id("source").first.get_by_test_id("source-support")).to_have_attribute(
        "aria-label", "支持回答"
    )
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"chat page is {width}px wide on a 390px screen"
    answer.scroll_into_view_if_needed()
    page.screenshot(path=str(output_dir / "chat-unsupported-narrow-zh.png"), full_page=True)
