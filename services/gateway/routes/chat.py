"""``POST /v1/chat/completions``: OpenAI-compatible, streaming and not, optionally grounded."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from services.gateway.chat import (
    ChatCompletionRequest,
    Completion,
    collect,
    plan_chat,
    start_generation,
    stream_events,
)
from services.gateway.deps import BackendsDep, SettingsDep

router = APIRouter(prefix="/v1/chat", tags=["openai"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, backends: BackendsDep, settings: SettingsDep
) -> JSONResponse | StreamingResponse:
    """A chat completion; with ``knowledge_base`` (or model ``kb:<name>``) the answer is
    grounded in retrieved passages, returned as ``citations`` (first chunk when streaming)."""
    plan = await plan_chat(body, backends, settings)
    generation = await start_generation(backends, plan, settings.chat_timeout_s)
    completion = Completion(model=body.model)
    if body.stream:
        events = stream_events(generation, completion, plan, body.include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    answer = await collect(generation, completion)
    if plan.knowledge_base is not None:
        answer["citations"] = plan.citations()
    return JSONResponse(answer)
