"""Agent chat (``/v1/agent/completions`` and Chatchat's ``/chat/agent_chat``) end to end.

The whole stack runs for real (embed, retrieve, ingest, generate over gRPC, the gateway behind
uvicorn); only the model is the scripted OpenAI-protocol server (``testing/fake_openai.py``),
because no tool-calling LLM runs here. The tools are the real ones: the knowledge-base search,
the calculator and text-to-SQL over a real SQLite file. Each test checks both ends: what the
client saw (steps, answer, citations) and what the model was sent (tools, tool results).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from testing.fake_openai import FakeOpenAI, Reply, ScriptedToolCall, running

from .stack import running_stack

HANDBOOK = (
    b"Leave policy. Employees get fifteen days of paid annual leave per year, "
    b"that is 15 days. Annual leave must be requested two weeks in advance.\n"
)
QUESTION = "How many days of annual leave do three employees get in total?"


@dataclass
class Agent:
    fake: FakeOpenAI
    url: str


def sql_database(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (region TEXT, amount INTEGER)")
        db.executemany("INSERT INTO orders VALUES (?, ?)", [("north", 120), ("north", 80), ("south", 500)])
    return f"sqlite:///{path}"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """The stack with the scripted model and three tools enabled, a knowledge base loaded."""
    async with running(FakeOpenAI(["unused"], model="fake-model")) as fake:
        generate = {
            "backend": "openai",
            "openai_base_url": fake.base_url,
            "openai_model": "fake-model",
            "openai_api_key": "test-key",
            "openai_max_retries": 0,
        }
        async with running_stack(
            tmp_path,
            generate=generate,
            agent_tools=["search_knowledge_base", "calculate", "text2sql"],
            agent_sql_databases={"shop": sql_database(tmp_path / "shop.db")},
        ) as stack:
            async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
                assert (await client.post("/v1/knowledge_bases", json={"name": "leave"})).status_code == 201
                uploaded = await client.post(
                    "/knowledge_base/upload_docs",
                    data={"knowledge_base_name": "leave"},
                    files=[("files", ("handbook.txt", HANDBOOK))],
                )
                assert uploaded.json()["data"]["failed_files"] == {}, uploaded.text
            yield Agent(fake, stack.url)


def sse_payloads(body: str) -> list[Any]:
    return [
        json.loads(line[6:])
        for line in body.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def tool_messages(sent: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in sent["messages"] if m["role"] == "tool"]


async def test_knowledge_base_then_calculation_streams_each_step_and_stores_them(agent: Agent) -> None:
    agent.fake.replies.extend(
        [
            Reply(
                tool_calls=[
                    ScriptedToolCall("search_knowledge_base", '{"query": "annual leave days"}', id="c1")
                ]
            ),
            Reply(
                tool_calls=[ScriptedToolCall("calculate", '{"expression": "15 * 3"}', id="c2")],
                fragment_chars=4,
            ),
            Reply(tokens=["Three ", "employees ", "get ", "45 ", "days ", "[1]."]),
        ]
    )
    async with httpx.AsyncClient(base_url=agent.url, timeout=120) as client:
        conversation = (await client.post("/v1/conversations", json={"title": "leave"})).json()["id"]
        response = await client.post(
            "/v1/agent/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": QUESTION}],
                "knowledge_bases": ["leave"],
                "stream": True,
                "conversation_id": conversation,
            },
        )
        assert response.status_code == 200, response.text
        stored = (await client.get(f"/v1/conversations/{conversation}")).json()["messages"]

    payloads = sse_payloads(response.text)
    steps = [p["agent_step"] for p in payloads if "agent_step" in p]
    assert [(s["type"], s["tool"]) for s in steps] == [
        ("tool_call", "search_knowledge_base"),
        ("tool_result", "search_knowledge_base"),
        ("tool_call", "calculate"),
        ("tool_result", "calculate"),
    ]
    assert "15 days" in steps[1]["result"] and not steps[1]["is_error"]
    assert steps[3]["result"] == "15 * 3 = 45"
    content = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p.get("choices"))
    assert content == "Three employees get 45 days [1]."
    finish = next(p for p in payloads if p.get("choices") and p["choices"][0]["finish_reason"])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert [s["tool"] for s in finish["steps"]] == ["search_knowledge_base", "calculate"]
    assert finish["citations"][0]["number"] == 1 and finish["citations"][0]["file_name"] == "handbook.txt"
    assert "agent_limit" not in finish

    # What the model was sent: the tools, then each result as a tool message answering its call.
    first, second, third = (call.body for call in agent.fake.calls[-3:])
    assert {t["function"]["name"] for t in first["tools"]} == {
        "search_knowledge_base",
        "calculate",
        "describe_database",
        "text2sql",
    }
    assert first["messages"][0]["role"] == "system" and first["messages"][-1]["content"] == QUESTION
    assert (
        tool_messages(second)[0]["tool_call_id"] == "c1" and "15 days" in tool_messages(second)[0]["content"]
    )
    assert tool_messages(third)[-1]["tool_call_id"] == "c2" and "45" in tool_messages(third)[-1]["content"]

    # The conversation holds the run: question, each call and result, then the answer.
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["name"] == "search_knowledge_base"
    assert stored[4]["tool_call_id"] == "c2"
    assert stored[-1]["content"] == content and stored[-1]["citations"][0]["file_name"] == "handbook.txt"


async def test_sql_then_calculation_through_the_openai_sdk(agent: Agent) -> None:
    sql = "SELECT SUM(amount) AS total FROM orders WHERE region = 'north'"
    agent.fake.replies.extend(
        [
            Reply(
                tool_calls=[
                    ScriptedToolCall("text2sql", json.dumps({"database": "shop", "sql": sql}), id="q1")
                ]
            ),
            Reply(tool_calls=[ScriptedToolCall("calculate", '{"expression": "200 * 1.1"}', id="q2")]),
            Reply(tokens=["North ", "sold ", "200; ", "with ", "10% ", "more: ", "220."]),
        ]
    )
    async with openai.AsyncOpenAI(base_url=f"{agent.url}/v1", api_key="unused", max_retries=0) as client:
        answer = await client.post(
            "/agent/completions",
            body={"model": "fake-model", "messages": [{"role": "user", "content": "North sales plus 10%?"}]},
            cast_to=ChatCompletion,
        )
    assert answer.choices[0].message.content == "North sold 200; with 10% more: 220."
    assert answer.choices[0].finish_reason == "stop"
    steps = (answer.model_extra or {})["steps"]
    assert [s["tool"] for s in steps] == ["text2sql", "calculate"]
    assert "200" in steps[0]["result"] and "220" in steps[1]["result"]
    sql_result = tool_messages(agent.fake.calls[-2].body)[0]["content"]
    assert sql in sql_result and "200" in sql_result  # the SQL it ran, and its rows
    assert "external-data" in sql_result  # rows from a database reach the model as data


async def test_a_tool_error_goes_back_to_the_model_and_the_step_limit_forces_an_answer(agent: Agent) -> None:
    agent.fake.replies.extend(
        [
            Reply(tool_calls=[ScriptedToolCall("calculate", '{"expression": "import os"}', id="e1")]),
            Reply(tokens=["I ", "could ", "not ", "compute ", "it."]),
        ]
    )
    async with httpx.AsyncClient(base_url=agent.url, timeout=120) as client:
        response = await client.post(
            "/v1/agent/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "Compute it"}],
                "tools": ["calculate"],
                "max_steps": 1,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["steps"][0]["is_error"] and body["steps"][0]["result"].startswith("Error:")
    assert body["agent_limit"] == "step_limit"
    assert body["choices"][0]["message"]["content"] == "I could not compute it."
    first, last = agent.fake.calls[-2].body, agent.fake.calls[-1].body
    assert [t["function"]["name"] for t in first["tools"]] == ["calculate"]  # only those asked for
    assert last["tool_choice"] == "none"  # tools used up: the model must answer
    assert tool_messages(last)[0]["content"].startswith("Error:")


async def test_refusals_name_the_field(agent: Agent) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=60) as client:
        unknown_tool = await client.post(
            "/v1/agent/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "tools": ["shell"]},
        )
        unknown_model = await client.post(
            "/v1/agent/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        )
        listed = await client.get("/v1/agent/tools")
    assert unknown_tool.status_code == 400 and unknown_tool.json()["error"]["param"] == "tools"
    assert "shell" in unknown_tool.json()["error"]["message"]
    assert unknown_model.status_code == 404 and "no-such-model" in unknown_model.json()["error"]["message"]
    assert [t["function"]["name"] for t in listed.json()["data"]] == [
        "search_knowledge_base",
        "calculate",
        "describe_database",
        "text2sql",
    ]


async def test_chatchat_agent_chat_frames(agent: Agent) -> None:
    agent.fake.replies.extend(
        [
            Reply(tool_calls=[ScriptedToolCall("calculate", '{"expression": "37 + 48"}', id="k1")]),
            Reply(tokens=["37+48=", "85"]),
        ]
    )
    async with httpx.AsyncClient(base_url=agent.url, timeout=60) as client:
        response = await client.post(
            "/chat/agent_chat", json={"query": "37+48=?", "stream": True, "model_name": "fake-model"}
        )
    frames = sse_payloads(response.text)
    tools = [frame["tools"] for frame in frames if "tools" in frame]
    assert len(tools) == 1 and "工具名称: calculate" in tools[0] and any("85" in line for line in tools[0])
    assert "".join(frame.get("answer", "") for frame in frames) == "37+48=85"
    assert frames[-1] == {"final_answer": "37+48=85"}


async def test_a_model_that_cannot_call_tools_is_refused(tmp_path: Path) -> None:
    # The default generate backend (extractive) cannot call tools.
    async with running_stack(tmp_path) as stack, httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        response = await client.post(
            "/v1/agent/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model" and "cannot call tools" in error["message"]
