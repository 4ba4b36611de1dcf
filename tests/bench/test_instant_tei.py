"""The instant embedder of ``make bench-ingest``: TEI's protocol as the embed service's client uses it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from launcher.stack import free_port
from services.embed.backends.tei import TeiBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def instant_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "testing.instant_tei", "--port", str(port), "--max-client-batch-size", "8"],
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, "instant_tei did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_tei_backend_embeds_through_it_deterministically(instant_url: str) -> None:
    async def embed_twice() -> tuple[TeiBackend, np.ndarray, np.ndarray]:
        backend = TeiBackend(EmbedSettings(backend="tei", tei_url=instant_url, metrics_port=0))
        await backend.start()
        texts = [f"第{n}段文字 passage {n}" for n in range(20)]  # over the batch limit: split
        try:
            return (
                backend,
                await backend.embed(texts, EmbedKind.PASSAGE),
                await backend.embed(texts[::-1], EmbedKind.PASSAGE),
            )
        finally:
            await backend.close()

    backend, first, reversed_ = asyncio.run(embed_twice())
    assert (backend.model, backend.dimension, backend.batch_size) == ("zhiku/instant-384", 384, 8)
    assert first.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first, reversed_[::-1])  # the same text, the same vector
    assert len({row.tobytes() for row in first}) > 1  # not one vector for everything


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"inputs": []}, 413, "cannot be empty"),
        ({"inputs": ["x"] * 9}, 413, "maximum allowed batch size 8"),
        ({"inputs": [1, 2]}, 422, "string or a list of strings"),
    ],
)
def test_it_refuses_what_tei_refuses(instant_url: str, body: dict, status: int, fragment: str) -> None:
    reply = httpx.post(f"{instant_url}/embed", json=body, timeout=5)
    assert reply.status_code == status
    assert fragment in reply.json()["error"] and reply.json()["error_type"] == "Validation"


def test_a_single_string_input_gets_one_vector(instant_url: str) -> None:
    reply = httpx.post(f"{instant_url}/embed", json={"inputs": "one", "normalize": True}, timeout=5)
    assert reply.status_code == 200 and np.asarray(reply.json()).shape == (1, 384)
