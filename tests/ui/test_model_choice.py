"""Choosing the model per conversation in the web UI, against a real stack serving two models:
the extractive default and ``tiny``, an ``openai``-backend model whose upstream is the
OpenAI-protocol test server (in a thread of this process). What the server received proves
which model each question reached; the choice is kept with the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from launcher.stack import BackgroundStack
from testing.fake_openai import FakeOpenAI, ThreadedFake, script_tokens
from tests.ui.conftest import enter_key_when_asked, gateway_client, launch_ui_stack

TINY_ANSWER = "The tiny model answers."
UPSTREAM_KEY = "fake-upstream-key"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedFake]:
    fake = ThreadedFake(FakeOpenAI(script_tokens(TINY_ANSWER), api_key=UPSTREAM_KEY))
    fake.start()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def api(
    upstream: ThreadedFake, tmp_path_factory: pytest.TempPathFactory, output_dir: Path
) -> Iterator[httpx.Client]:
    tiny = {
        "backend": "openai",
        "openai_base_url": upstream.fake.base_url,
        "openai_api_key": UPSTREAM_KEY,
        "openai_model": "tiny-upstream",
        "openai_max_retries": 0,
    }
    stack: BackgroundStack = launch_ui_stack(
        tmp_path_factory.mktemp("zhiku-ui-models"),
        output_dir / "stack-models.log",
        models=json.dumps({"tiny": tiny}),
    )
    try:
        with gateway_client(stack) as client:
            yield client
    finally:
        stack.stop()


def ask(page: Page, question: str) -> dict[str, object]:
    """Send ``question``; the request body the UI sent, once the answer is complete."""
    page.get_by_test_id("chat-input").fill(question)
    with page.expect_request("**/v1/chat/completions") as sent:
        page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("assistant-message").last).to_have_attribute("data-state", "done")
    return json.loads(sent.value.post_data or "{}")


def test_a_conversation_keeps_the_model_it_was_held_with(
    page: Page, api: httpx.Client, upstream: ThreadedFake, output_dir: Path
) -> None:
    page.goto(f"{str(api.base_url).rstrip('/')}/#/chat")
    enter_key_when_asked(page)
    choice = page.get_by_test_id("chat-model")
    expect(choice.locator("option")).to_have_text(["extractive", "tiny · tools"])  # the default first
    page.get_by_test_id("chat-mode").select_option("plain")

    choice.select_option("tiny")
    body = ask(page, "Who answers this?")
    assert body["model"] == "tiny"
    expect(page.get_by_test_id("assistant-message").last).to_contain_text(TINY_ANSWER)
    assert [call.body["model"] for call in upstream.fake.calls] == ["tiny-upstream"]
    assert upstream.fake.calls[0].body["messages"][-1]["content"] == "Who answers this?"
    page.screenshot(path=str(output_dir / "model-choice.png"))

    # A new conversation with the default model: the test server hears nothing of it.
    page.get_by_test_id("conversation-new").click()
    choice.select_option(label="extractive")
    assert ask(page, "And this one?")["model"] == "default"
    assert len(upstream.fake.calls) == 1

    # Reopening the first conversation brings its model back, and asking there uses it.
    first = page.get_by_test_id("conversation-item").filter(has_text="Who answers this?")
    first.locator("button.title").click()
    expect(choice).to_have_value("tiny")
    assert ask(page, "Still you?")["model"] == "tiny"
    assert len(upstream.fake.calls) == 2
