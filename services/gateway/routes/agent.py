"""``/v1/agent/*``: agent chat, where the model calls the deployment's tools on the server.

The request is OpenAI's chat request; the answer is OpenAI's chat completion (or its chunks),
with the run's ``steps`` (each tool call: name, arguments, a summary of the result) and the
``citations`` of the knowledge-base passages the tools found. Streamed, every step is sent as
it starts and ends, in chunks whose ``choices`` are empty and whose ``agent_step`` holds it,
so an OpenAI SDK reads the answer as usual and a client that wants the steps finds them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.gateway.agent.conversation import agent_messages, stored_run
from services.gateway.agent.loop import (
    AgentEvent,
    AgentFinished,
    AgentLimits,
    AgentRun,
    AnswerDelta,
    StepFinished,
    StepStarted,
)
from services.gateway.agent.tools.base import ToolContext
from services.gateway.agent.tools.registry import ToolRegistry
from services.gateway.chat.history import HistoryTurn, prepare_turn
from services.gateway.chat.streaming import sse
from services.gateway.chat.tool_support import ensure_model_calls_tools
from services.gateway.deps import ClientsDep, CurrentKey, SettingsDep, StoreDep
from services.gateway.errors import HttpApiError, rpc_error_body
from services.gateway.schemas.agent import AgentCompletionRequest
from services.gateway.schemas.openai import ChatCompletionRequest, Completion
from services.gateway.store import GatewayStore

router = APIRouter(prefix="/v1/agent", tags=["agent"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def enabled_tools(request: Request) -> ToolRegistry:
    registry: ToolRegistry = request.app.state.agent_tools
    return registry


@router.get("/tools")
async def list_agent_tools(request: Request) -> dict[str, Any]:
    """The tools this deployment enables (``ZHIKU_GATEWAY_AGENT_TOOLS``), as OpenAI ``tools``."""
    return {"object": "list", "data": enabled_tools(request).openai_tools()}


def _offered(registry: ToolRegistry, names: list[str] | None) -> ToolRegistry:
    if not len(registry):
        raise HttpApiError(
            400, "no agent tools are enabled on this deployment: set ZHIKU_GATEWAY_AGENT_TOOLS", param="tools"
        )
    if names is None:
        return registry
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise HttpApiError(
            400,
            f"unknown or disabled tool(s) {', '.join(unknown)}; "
            f"enabled: {', '.join(tool.name for tool in registry)}",
            param="tools",
        )
    if not names:
        raise HttpApiError(
            400, "tools is empty: name at least one tool, or leave it out for all", param="tools"
        )
    return registry.subset(names)


async def start_agent(
    body: AgentCompletionRequest,
    http: Request,
    clients: ClientsDep,
    settings: SettingsDep,
    store: GatewayStore,
    principal: CurrentKey,
) -> tuple[AgentRun, HistoryTurn, AsyncIterator[AgentEvent], AgentEvent]:
    """Check the request, resolve the conversation and start the run up to its first event, so
    a failing start (unknown model, a model without tools, generate down) is an HTTP status."""
    tools = _offered(enabled_tools(http), body.tools)
    as_chat = ChatCompletionRequest(
        model=body.model, messages=body.messages, conversation_id=body.conversation_id
    )
    turn = await prepare_turn(as_chat, store, principal, settings.conversation_history_messages)
    await ensure_model_calls_tools(clients, body.model, settings.request_timeout_s)
    knowledge_bases = list(dict.fromkeys(body.knowledge_bases))
    if not knowledge_bases and turn.request.knowledge_base:
        knowledge_bases = [turn.request.knowledge_base]  # the conversation's knowledge base
    run = AgentRun(
        clients=clients,
        tools=tools,
        context=ToolContext(settings=settings, clients=clients, knowledge_bases=tuple(knowledge_bases)),
        limits=AgentLimits(
            max_steps=body.max_steps or settings.agent_max_steps,
            time_limit_s=settings.agent_time_limit_s,
            tool_timeout_s=settings.agent_tool_timeout_s,
        ),
        messages=agent_messages(turn.request.messages),
        model=body.model,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
    )
    events = aiter(run.events())
    first = await anext(events)
    return run, turn, events, first


async def _all(first: AgentEvent, rest: AsyncIterator[AgentEvent]) -> AsyncIterator[AgentEvent]:
    yield first
    async for event in rest:
        yield event


def _finish_fields(run: AgentRun, finished: AgentFinished) -> dict[str, Any]:
    fields: dict[str, Any] = {"steps": [step.finished() for step in run.steps], "citations": run.citations}
    if finished.limit:
        fields["agent_limit"] = finished.limit
    return fields


@router.post("/completions", response_model=None)
async def create_agent_completion(
    body: AgentCompletionRequest,
    http: Request,
    clients: ClientsDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: CurrentKey,
) -> JSONResponse | StreamingResponse:
    """Agent chat: the model calls the enabled tools (``GET /v1/agent/tools``) until it answers,
    within ``max_steps`` tool rounds (default ``ZHIKU_GATEWAY_AGENT_MAX_STEPS``) and the
    deployment's time limit. The answer carries ``steps`` and ``citations``; streamed, each step
    arrives as it happens (``agent_step`` chunks: ``tool_call``, then ``tool_result``), then the
    answer's content chunks. With ``conversation_id`` the whole run, tool calls included, is
    stored in the conversation."""
    run, turn, events, first = await start_agent(body, http, clients, settings, store, principal)
    completion = Completion(model=body.model)
    if body.stream:
        return StreamingResponse(
            _frames(run, turn, store, completion, _all(first, events), body.include_usage),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    finished: AgentFinished | None = None
    async for event in _all(first, events):
        if isinstance(event, AgentFinished):
            finished = event
    assert finished is not None  # the loop always ends with one
    answer = completion.whole(run.answer, finished.finish_reason, finished.usage)
    answer.update(_finish_fields(run, finished))
    await stored_run(store, turn, run)
    answer.update(turn.extra_fields())
    return JSONResponse(answer)


async def _frames(
    run: AgentRun,
    turn: HistoryTurn,
    store: GatewayStore,
    completion: Completion,
    events: AsyncIterator[AgentEvent],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Role first, then steps and content as they happen, the finish chunk with ``steps`` and
    ``citations``, optional usage, [DONE]. A run cut short still stores what it did."""
    try:
        yield sse({**completion.chunk({"role": "assistant", "content": ""}), **turn.extra_fields()})
        async for event in events:
            if isinstance(event, StepStarted):
                yield sse({**completion.chunk({}), "choices": [], "agent_step": event.step.started()})
            elif isinstance(event, StepFinished):
                yield sse({**completion.chunk({}), "choices": [], "agent_step": event.step.finished()})
            elif isinstance(event, AnswerDelta):
                yield sse(completion.chunk({"content": event.text}))
            else:
                yield sse({**completion.chunk({}, event.finish_reason), **_finish_fields(run, event)})
                if include_usage:
                    yield sse(completion.usage_chunk(event.usage))
        yield sse("[DONE]")
    except grpc.RpcError as error:
        _, body = rpc_error_body(error)
        yield sse(body)
    finally:
        with anyio.CancelScope(shield=True):
            await stored_run(store, turn, run)
