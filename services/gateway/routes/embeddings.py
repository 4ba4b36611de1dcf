"""``POST /v1/embeddings``: OpenAI-compatible embeddings from the embed service.

The ``openai`` SDK asks for ``encoding_format="base64"`` unless told otherwise (smaller
payloads), so both encodings are served: base64 is the little-endian float32 bytes.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.deps import EmbedStub, SettingsDep
from services.gateway.errors import HttpApiError
from zhiku.v1 import embed_pb2

router = APIRouter(prefix="/v1/embeddings", tags=["openai"])

MAX_INPUTS = 2048


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[int] | list[list[int]]
    model: str = ""
    encoding_format: Literal["float", "base64"] = "float"
    # Passages by default, as OpenAI embeds everything alike; "query" for asymmetric models.
    input_type: Literal["query", "passage"] = Field(default="passage")


def _texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts or not all(isinstance(text, str) for text in texts):
        raise HttpApiError(
            422, "input must be a string or a non-empty list of strings (no token ids)", param="input"
        )
    if len(texts) > MAX_INPUTS:
        raise HttpApiError(422, f"at most {MAX_INPUTS} inputs per request", param="input")
    return texts  # type: ignore[return-value]  # all str, checked above


@router.post("")
async def create_embeddings(
    body: EmbeddingsRequest, embed: EmbedStub, settings: SettingsDep
) -> dict[str, object]:
    texts = _texts(body.input)
    kind = embed_pb2.EMBED_KIND_QUERY if body.input_type == "query" else embed_pb2.EMBED_KIND_PASSAGE
    reply = await embed.Embed(
        embed_pb2.EmbedRequest(texts=texts, kind=kind), timeout=settings.request_timeout_s
    )
    data: list[dict[str, object]] = []
    for index, vector in enumerate(reply.vectors):
        values: object = list(vector.values)
        if body.encoding_format == "base64":
            values = base64.b64encode(np.asarray(vector.values, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": index, "embedding": values})
    # The embed service reports no token counts; zero says "not metered" rather than guessing.
    return {
        "object": "list",
        "data": data,
        "model": reply.model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
