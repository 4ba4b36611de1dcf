"""The models the generate services serve, merged: what ``GET /v1/models`` lists and what
Chatchat's ``model_name`` is checked against.

The main generate service lists its default model first; services serving one model each
(``ZHIKU_GATEWAY_GENERATE_MODEL_ADDRS``) follow. A name two services claim belongs to the first.
"""

from __future__ import annotations

import asyncio

from services.gateway.clients import ServiceClients
from zhiku.v1 import generate_pb2


async def served_models(clients: ServiceClients, timeout_s: float) -> dict[str, generate_pb2.ModelCard]:
    """Model id -> card, the default model first."""
    replies = await asyncio.gather(
        *(
            stub.ListModels(generate_pb2.ListModelsRequest(), timeout=timeout_s)
            for stub in clients.generate_services
        )
    )
    cards: dict[str, generate_pb2.ModelCard] = {}
    for reply in replies:
        for card in reply.models:
            cards.setdefault(card.id, card)
    return cards


async def served_or_default(clients: ServiceClients, name: str, timeout_s: float) -> str:
    """``name`` when a generate service serves it, else "" (the default model).

    For Chatchat's clients, which send their own configured LLM's name (``chatglm3-6b``) with
    every request: a drop-in must answer them, so a name not served here falls back to the
    default model instead of the 404 the OpenAI route gives."""
    if not name:
        return ""
    return name if name in await served_models(clients, timeout_s) else ""
