"""``zhiku agent`` against a stack whose model calls tools: the scripted OpenAI-protocol server
(``testing/fake_openai.py``, the LLM that cannot run here) behind the generate service's
``openai`` backend, everything else real, started as ``make run`` starts it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from launcher.stack import launch_in_background
from services.cli.main import app
from testing.fake_openai import FakeOpenAI, Reply, ScriptedToolCall, ThreadedFake

from .conftest import FAST_STACK_ENV, OUTPUT


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(["unused"], model="fake-model")
    threaded = ThreadedFake(fake)
    threaded.start()
    yield fake
    threaded.close()


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        **FAST_STACK_ENV,
        "ZHIKU_GENERATE_BACKEND": "openai",
        "ZHIKU_GENERATE_OPENAI_BASE_URL": upstream.base_url,
        "ZHIKU_GENERATE_OPENAI_MODEL": "fake-model",
        "ZHIKU_GENERATE_OPENAI_API_KEY": "test-key",
    }
    try:
        stack = launch_in_background(
            tmp_path_factory.mktemp("agent-cli"), OUTPUT / "agent-stack.log", env=env
        )
    except RuntimeError as error:
        pytest.fail(str(error))
    yield stack.url
    stack.stop()


def zhiku(url: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["--url", url, *args], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_agent_prints_each_step_then_the_answer(upstream: FakeOpenAI, gateway: str) -> None:
    upstream.replies.extend(
        [
            Reply(tool_calls=[ScriptedToolCall("calculate", '{"expression": "37 + 48"}', id="c1")]),
            Reply(tokens=["37 + 48 ", "is ", "85."]),
        ]
    )
    out = zhiku(gateway, "agent", "What is 37 + 48?", "--tool", "calculate")
    call, result, answer = out.index("→ calculate"), out.index("← calculate: 85"), out.index("37 + 48 is 85.")
    assert call < result < answer  # steps as they happen, then the answer
    assert [t["function"]["name"] for t in upstream.calls[-2].body["tools"]] == ["calculate"]


def test_agent_reports_a_tool_error_in_red_and_goes_on(upstream: FakeOpenAI, gateway: str) -> None:
    upstream.replies.extend(
        [
            Reply(tool_calls=[ScriptedToolCall("calculate", '{"expression": "open(1)"}', id="e1")]),
            Reply(tokens=["Cannot compute that."]),
        ]
    )
    out = zhiku(gateway, "agent", "Compute open(1)", "--tool", "calculate")
    assert "✗ calculate: Error:" in out and "Cannot compute that." in out


def test_agent_with_an_unknown_tool_is_a_clear_error(gateway: str) -> None:
    result = CliRunner().invoke(app, ["--url", gateway, "agent", "hi", "--tool", "shell"])
    assert result.exit_code != 0
    assert "shell" in result.output
