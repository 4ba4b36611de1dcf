"""``GET /v1/models``: the generate service's models plus one ``kb:<name>`` per knowledge base.

Each served model comes in OpenAI's list shape plus what a client choosing among several needs:
``backend``, ``context_length`` (tokens) and ``capabilities`` (``tools``: tool calling passes
through). The default model (what a request with no ``model`` gets) is listed first, with
``default: true``, then the rest of the main generate service's, then those of generate
services serving one model each (``ZHIKU_GATEWAY_GENERATE_MODEL_ADDRS``). Clients that can
only pick a model (chat UIs speaking the OpenAI API) reach a knowledge base by choosing
``kb:<name>``; the chat route treats it exactly like ``knowledge_base=<name>``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from services.gateway.deps import ClientsDep, SettingsDep
from services.gateway.served_models import served_models
from zhiku.v1 import ingest_pb2

router = APIRouter(prefix="/v1/models", tags=["openai"])

KB_MODEL_PREFIX = "kb:"
OWNER = "zhiku"


@router.get("")
async def list_models(clients: ClientsDep, settings: SettingsDep) -> dict[str, object]:
    """The served models (from every generate service), then ``kb:<name>`` for each knowledge
    base the caller's key may use."""
    timeout = settings.request_timeout_s
    cards, kbs = await asyncio.gather(
        served_models(clients, timeout),
        clients.ingest.ListKnowledgeBases(ingest_pb2.ListKnowledgeBasesRequest(), timeout=timeout),
    )
    data: list[dict[str, object]] = [
        {
            "id": card.id,
            "object": "model",
            "created": 0,
            "owned_by": OWNER,
            "backend": card.backend,
            "context_length": card.context_window,
            "capabilities": {"chat": True, "tools": card.tools},
            "default": index == 0,
        }
        for index, card in enumerate(cards.values())
    ]
    data += [
        {
            "id": f"{KB_MODEL_PREFIX}{kb.name}",
            "object": "model",
            "created": int(kb.created_at),
            "owned_by": OWNER,
            "knowledge_base": kb.name,
        }
        for kb in kbs.knowledge_bases
    ]
    return {"object": "list", "data": data}
