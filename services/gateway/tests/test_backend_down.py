"""A backend that is down answers 503 naming that service, and serves again once it is back.

This is what a client sees while the local launcher (or Kubernetes) restarts one service: the
other routes keep working, the dead service's routes say which service is missing, and the
same gateway process serves them again as soon as the service listens on its address again.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from services.common.grpc_server import GrpcService
from services.gateway.app import create_app
from services.generate.server import build_spec

from .support import asgi_client, free_port, gateway_settings, loopback
from .test_chat_plain import QUESTION, generate_settings

CHAT = {"model": "extractive", "messages": QUESTION}


def unavailable_message(response: httpx.Response) -> str:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    return error["message"]


async def test_each_unreachable_service_is_named() -> None:
    async with asgi_client(create_app(gateway_settings({}))) as client:
        listed = await client.get("/v1/knowledge_bases")
        assert unavailable_message(listed).startswith("the ingest service is unavailable: ")
        embedded = await client.post("/v1/embeddings", json={"model": "default", "input": ["hello"]})
        assert unavailable_message(embedded).startswith("the embed service is unavailable: ")
        answered = await client.post("/v1/chat/completions", json=CHAT)
        assert unavailable_message(answered).startswith("the generate service is unavailable: ")


async def test_a_restarted_service_serves_again_through_the_same_gateway() -> None:
    port = free_port()
    settings = loopback(generate_settings()).model_copy(update={"grpc_port": port})
    app = create_app(gateway_settings({"generate": f"127.0.0.1:{port}"}))
    async with asgi_client(app) as client:
        first = GrpcService(build_spec(settings), settings)
        await first.start()
        try:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
            assert streamed.status_code == 200 and "[DONE]" in streamed.text
        finally:
            await first.stop()

        for body in (CHAT, {**CHAT, "stream": True}):
            down = await client.post("/v1/chat/completions", json=body)
            assert unavailable_message(down).startswith("the generate service is unavailable: ")

        second = GrpcService(build_spec(settings), settings)
        await second.start()
        try:
            # The channel reconnects on its own, at its next reconnect attempt (a few seconds
            # apart at most); until then calls still fail fast with the same 503.
            again = await client.post("/v1/chat/completions", json=CHAT)
            deadline = time.monotonic() + 60
            while again.status_code == 503 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                again = await client.post("/v1/chat/completions", json=CHAT)
            assert again.status_code == 200, again.text
            assert again.json()["choices"][0]["message"]["content"]
        finally:
            await second.stop()
