"""Agent mode in the web UI, against a real stack serving two models: the extractive default
(which cannot call tools) and ``tiny``, an ``openai``-backend model whose upstream is the
OpenAI-protocol test server (in a thread of this process), scripted to search the knowledge
base, call ``calculate`` and then answer citing the passage. The tools are the gateway's real
ones; what the test server received proves their results went back to the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from launcher.stack import BackgroundStack
from testing.fake_openai import FakeOpenAI, Reply, ScriptedToolCall, ThreadedFake
from tests.ui.conftest import enter_key_when_asked, gateway_client, ingest, launch_ui_stack

UPSTREAM_KEY = "fake-upstream-key"
KB = "ui-agent-kb"
QUESTION = "How many leave days do three employees get?"
HANDBOOK = "Leave policy. Employees get fifteen days of paid annual leave per year, that is 15 days.\n"
ANSWER = "Three employees get 45 days [1]."


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedFake]:
    fake = ThreadedFake(FakeOpenAI(["unused"], api_key=UPSTREAM_KEY))
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
        tmp_path_factory.mktemp("zhiku-ui-agent"),
        output_dir / "stack-agent.log",
        models=json.dumps({"tiny": tiny}),
    )
    try:
        with gateway_client(stack) as client:
            ingest(client, KB, {"handbook.txt": HANDBOOK})
            yield client
    finally:
        stack.stop()


def ask(page: Page, question: str) -> tuple[Locator, dict[str, object]]:
    """Send ``question`` to the agent; its answer bubble and the request body the UI sent."""
    page.get_by_test_id("chat-input").fill(question)
    with page.expect_request("**/v1/agent/completions") as sent:
        page.get_by_test_id("chat-send").click()
    return page.get_by_test_id("assistant-message").last, json.loads(sent.value.post_data or "{}")


def test_agent_mode_shows_each_tool_step_folded_then_the_answer(
    page: Page, api: httpx.Client, upstream: ThreadedFake, output_dir: Path
) -> None:
    page.goto(f"{str(api.base_url).rstrip('/')}/#/chat")
    enter_key_when_asked(page)
    page.get_by_test_id("chat-kb").select_option(KB)
    toggle = page.get_by_test_id("chat-agent")
    expect(toggle).not_to_be_checked()
    toggle.check()
    expect(page.get_by_test_id("chat-topK")).to_have_count(0)  # the agent searches on its own

    # The default extractive model cannot call tools: the gateway's 400 is the answer's error.
    bubble, body = ask(page, "What is 2 + 2?")
    expect(bubble).to_have_attribute("data-state", "failed")
    expect(bubble).to_contain_text("cannot call tools")
    expect(bubble).to_contain_text("'extractive'")
    assert body["model"] == "default" and not upstream.fake.calls

    # With the tools model: the step streams in folded, before the answer, which follows.
    page.get_by_test_id("conversation-new").click()
    page.get_by_test_id("chat-model").select_option("tiny")
    upstream.fake.replies.extend(
        [
            Reply(tool_calls=[ScriptedToolCall("search_knowledge_base", '{"query": "leave"}', id="k1")]),
            Reply(tool_calls=[ScriptedToolCall("calculate", '{"expression": "15 * 3"}', id="c1")]),
            Reply(tokens=["Three ", "employees ", "get ", "45 ", "days ", "[1]."]),
        ]
    )
    upstream.fake.ttft_s = 4.0  # each model call waits: the step shows while the answer is due
    bubble, body = ask(page, QUESTION)
    assert body["model"] == "tiny" and body["knowledge_bases"] == [KB] and body["stream"] is True
    steps = bubble.get_by_test_id("agent-step")
    step = steps.last
    expect(step).to_have_attribute("data-state", "done")
    expect(step).to_have_attribute("data-tool", "calculate")
    expect(step.get_by_test_id("agent-step-summary")).to_have_text("45")  # the tool's summary
    assert bubble.get_attribute("data-state") is None  # still streaming: no answer yet
    assert bubble.get_by_test_id("answer").inner_text().strip() == ""
    expect(bubble).to_have_attribute("data-state", "done")
    upstream.fake.ttft_s = 0.0
    expect(bubble.get_by_test_id("answer")).to_have_text(ANSWER.replace("[1]", "1"))  # [1]: a button
    expect(steps.first).to_have_attribute("data-tool", "search_knowledge_base")
    expect(steps.first.get_by_test_id("agent-step-result")).to_contain_text("15 days", use_inner_text=False)
    expect(bubble.get_by_test_id("source")).to_contain_text(["[1] handbook.txt"])  # as chat shows them
    bubble.locator("button.cite").click()
    expect(page.get_by_test_id("passage-text")).to_contain_text("fifteen days of paid annual leave")
    page.get_by_test_id("dialog-close").click()
    expect(page.get_by_test_id("passage-dialog")).to_have_count(0)
    expect(step).not_to_have_attribute("open", "")  # folded
    expect(step.get_by_test_id("agent-step-result")).to_be_hidden()
    step.locator("summary").click()
    expect(step.get_by_test_id("agent-step-arguments")).to_contain_text('"expression": "15 * 3"')
    expect(step.get_by_test_id("agent-step-result")).to_have_text("15 * 3 = 45")
    page.screenshot(path=str(output_dir / "agent-mode.png"))

    # What the model was offered and then told: the tools, then the calculator's result.
    first, _, third = (call.body for call in upstream.fake.calls[-3:])
    assert {"search_knowledge_base", "calculate"} <= {tool["function"]["name"] for tool in first["tools"]}
    tool_turns = [m for m in third["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_turns] == ["k1", "c1"]
    assert "15 days" in tool_turns[0]["content"] and "45" in tool_turns[1]["content"]

    # A failing tool call is marked as an error; the model answers anyway.
    upstream.fake.replies.extend(
        [
            Reply(tool_calls=[ScriptedToolCall("calculate", '{"expression": "import os"}', id="c2")]),
            Reply(tokens=["I ", "could ", "not ", "compute ", "it."]),
        ]
    )
    bubble, _ = ask(page, "And import os?")
    expect(bubble).to_have_attribute("data-state", "done")
    failed = bubble.get_by_test_id("agent-step")
    expect(failed).to_have_attribute("data-state", "failed")
    expect(failed).to_have_class("agent-step error")
    expect(failed.get_by_test_id("agent-step-summary")).to_contain_text("Error")
    expect(bubble.get_by_test_id("answer")).to_have_text("I could not compute it.")

    # Reopened, the conversation shows its steps again and is still in agent mode.
    page.get_by_test_id("conversation-new").click()
    toggle.uncheck()
    page.get_by_test_id("conversation-item").filter(has_text=QUESTION).locator("button.title").click()
    expect(toggle).to_be_checked()
    answers = page.get_by_test_id("assistant-message")
    expect(answers).to_have_count(2)
    reopened = answers.first.get_by_test_id("agent-step")
    expect(reopened.locator("strong.tool")).to_have_text(["search_knowledge_base", "calculate"])
    # Stored steps keep the result, not the summary: the result is their line.
    expect(reopened.last.get_by_test_id("agent-step-summary")).to_have_text("15 * 3 = 45")
    expect(answers.first.get_by_test_id("source")).to_contain_text(["[1] handbook.txt"])
    expect(answers.last.get_by_test_id("agent-step")).to_have_count(1)
