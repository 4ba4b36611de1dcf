"""Chatchat v0.2's ``/chat/agent_chat`` over Zhiku's agent loop.

Chatchat's clients read ``text/event-stream`` frames of JSON: ``{"tools": [lines]}`` when a
tool finished (name, input, output, fenced as Chatchat's web UI shows them), ``{"answer":
token}`` while the model writes, and ``{"final_answer": text}`` at the end; without ``stream``
one frame holds ``answer`` and ``final_answer``. The run itself is exactly that of
``/v1/agent/completions``; ``model_name`` and ``prompt_name`` are accepted and ignored, as on
the other Chatchat routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from services.gateway.agent.loop import AgentEvent, AgentFinished, AnswerDelta, StepFinished, ToolStep
from services.gateway.deps import ClientsDep, CurrentKey, SettingsDep, StoreDep
from services.gateway.errors import rpc_error_body
from services.gateway.routes.agent import start_agent
from services.gateway.routes.chatchat.chat import (
    EVENT_STREAM,
    ChatBody,
    completion_request,
    with_served_model,
)
from services.gateway.routes.chatchat.envelopes import ERRORS, sse_frame
from services.gateway.routes.chatchat.knowledge_base import SSE_HEADERS
from services.gateway.schemas.agent import AgentCompletionRequest

router = APIRouter(prefix="/chat", tags=["chatchat"], responses=ERRORS)


def _tool_lines(step: ToolStep) -> list[str]:
    status = "调用失败" if step.is_error else "调用成功"
    return [
        "\n```\n",
        f"工具名称: {step.tool}",
        f"工具状态: {status}",
        f"工具输入: {step.arguments}",
        f"工具输出: {step.finished()['result']}",
        "\n```\n",
    ]


async def _frames(events: AsyncIterator[AgentEvent], stream: bool) -> AsyncIterator[bytes]:
    answer = ""
    try:
        async for event in events:
            if isinstance(event, StepFinished) and stream:
                yield sse_frame({"tools": _tool_lines(event.step)})
            elif isinstance(event, AnswerDelta):
                answer += event.text
                if stream:
                    yield sse_frame({"answer": event.text})
            elif isinstance(event, AgentFinished):
                yield sse_frame(
                    {"final_answer": answer} if stream else {"answer": answer, "final_answer": answer}
                )
    except grpc.RpcError as error:
        _, body = rpc_error_body(error)
        yield sse_frame(body)


@router.post("/agent_chat", response_class=StreamingResponse, responses=EVENT_STREAM)
async def agent_chat(
    body: ChatBody,
    request: Request,
    clients: ClientsDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: CurrentKey,
) -> StreamingResponse:
    """Agent chat: frames ``{"tools": [...]}`` per finished tool call, ``{"answer": token}``,
    then ``{"final_answer": answer}``."""
    chat = completion_request(await with_served_model(body, clients, settings))
    agent_body = AgentCompletionRequest(
        model=chat.model,
        messages=chat.messages,
        temperature=chat.temperature,
        max_tokens=chat.max_tokens,
        stream=body.stream,
    )
    _, _, events, first = await start_agent(agent_body, request, clients, settings, store, principal)

    async def everything() -> AsyncIterator[AgentEvent]:
        yield first
        async for event in events:
            yield event

    return StreamingResponse(
        _frames(everything(), body.stream), media_type="text/event-stream", headers=SSE_HEADERS
    )
