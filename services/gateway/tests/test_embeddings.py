"""``/v1/embeddings`` through the real embed service (bundled USE model), with the openai SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import openai
import pytest

from services.embed.config import EmbedSettings
from services.embed.server import build_spec
from services.gateway.app import create_app

from .support import asgi_client, gateway_settings, running_service, served


@pytest.fixture
async def embed_address() -> AsyncIterator[str]:
    settings = EmbedSettings(backend="local", local_model="use", metrics_port=0)
    async with running_service(build_spec(settings), settings) as service:
        yield f"127.0.0.1:{service.port}"


async def test_sdk_embeddings_float_and_base64_agree(embed_address: str) -> None:
    app = create_app(gateway_settings({"embed": embed_address}))
    texts = ["退款政策是什么？", "How do refunds work?", "The weather is sunny."]
    async with (
        served(app) as url,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client,
    ):
        as_base64 = await client.embeddings.create(model="any", input=texts)  # the SDK's default
        as_float = await client.embeddings.create(model="any", input=texts, encoding_format="float")
    assert [item.index for item in as_float.data] == [0, 1, 2]
    matrix = np.array([item.embedding for item in as_float.data])
    decoded = np.array([item.embedding for item in as_base64.data])
    assert matrix.shape == decoded.shape and matrix.shape[1] > 16
    np.testing.assert_allclose(matrix, decoded, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    # Multilingual: the Chinese and English refund questions are closer than refund vs weather.
    assert matrix[0] @ matrix[1] > matrix[1] @ matrix[2]
    assert as_float.model


async def test_token_id_input_is_refused(embed_address: str) -> None:
    async with asgi_client(create_app(gateway_settings({"embed": embed_address}))) as client:
        response = await client.post("/v1/embeddings", json={"model": "m", "input": [[1, 2, 3]]})
        assert response.status_code == 422
        assert response.json()["error"]["param"] == "input"
        single = await client.post("/v1/embeddings", json={"model": "m", "input": "one text"})
        assert single.status_code == 200
        assert len(single.json()["data"]) == 1
