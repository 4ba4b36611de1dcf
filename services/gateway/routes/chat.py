"""``POST /v1/chat/completions``: OpenAI-compatible, streaming and not, optionally grounded."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from services.gateway.chat.generation import collect, start_generation
from services.gateway.chat.history import prepare_turn
from services.gateway.chat.planning import plan_chat
from services.gateway.chat.streaming import stream_events
from services.gateway.deps import ClientsDep, CurrentKey, SettingsDep, StoreDep
from services.gateway.schemas.openai import ChatCompletionRequest, Completion

router = APIRouter(prefix="/v1/chat", tags=["openai"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest,
    clients: ClientsDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: CurrentKey,
) -> JSONResponse | StreamingResponse:
    """A chat completion; with ``knowledge_base`` (or model ``kb:<name>``, or ``file_chat_id``)
    the answer is grounded in retrieved passages, returned as ``citations`` (first chunk when
    streaming, again on the finish chunk once checked). Grounded answers also carry
    ``abstained`` (the passages cannot answer and the reply says so), ``retrieval_query``
    (what was searched: a follow-up made standalone) and ``unsupported`` (sentences of the
    answer no passage backs; each citation's ``supported`` says whether it backs the answer).
    With ``conversation_id`` the stored history is prepended, the new turn is stored, and the
    response carries ``conversation_id`` and ``message_id``.

    ``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` reach models
    that support them, and ``tool_calls`` come back as OpenAI sends them (streamed in pieces);
    a model that cannot call tools makes a request with tools a 400 naming ``tools``."""
    history = settings.conversation_history_messages if body.history_length is None else body.history_length
    turn = await prepare_turn(body, store, principal, history)
    plan = await plan_chat(turn.request, clients, settings)
    generation = await start_generation(clients, plan, settings.chat_timeout_s)
    completion = Completion(model=body.model)
    if body.stream:

        async def remember(answer: str) -> None:
            citations = plan.citations(generation.grounding)
            grounding = plan.stored_grounding(generation)
            await turn.store_answer(store, answer, citations, grounding, generation.tool_calls)

        events = stream_events(
            generation, completion, plan, body.include_usage, turn.extra_fields(), remember
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    answer = await collect(generation, completion)
    if plan.grounded:
        answer["citations"] = plan.citations()
    answer.update(plan.grounded_fields(generation))
    citations = plan.citations(generation.grounding)
    content = answer["choices"][0]["message"]["content"] or ""
    grounding = plan.stored_grounding(generation)
    await turn.store_answer(store, content, citations, grounding, generation.tool_calls)
    answer.update(turn.extra_fields())
    return JSONResponse(answer)
