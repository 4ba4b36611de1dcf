"""The bundled USE model in the local backend: batches run side by side on one thread each,
and the vectors are the ones the model gives one batch at a time, in the caller's order."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from services.embed.backends.local import LocalBackend
from services.embed.domain import EmbedKind, l2_normalise
from services.embed.models.use import UseEncoder
from services.embed.tests.conftest import make_settings

# Lengths differ on purpose: the backend sorts by length, so the answer must be put back.
TEXTS = [f"第{index}段：{'年假与病假的规定' * (1 + index % 5)} passage {index}" for index in range(37)]


async def test_batches_run_side_by_side_and_keep_each_texts_vector() -> None:
    backend = LocalBackend(make_settings(local_model="use", local_threads=2, batch_size=4))
    await backend.start()
    try:
        encoder = backend._encoder
        assert encoder is not None and encoder.calls == 2
        # Watch the model calls: two must be inside the model at the same moment.
        inside, most = 0, 0
        lock = threading.Lock()
        plain_encode = encoder.encode

        def counting(texts: list[str], kind: EmbedKind) -> np.ndarray:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.02)  # long enough for the other model thread to arrive
                return plain_encode(texts, kind)
            finally:
                with lock:
                    inside -= 1

        encoder.encode = counting  # type: ignore[method-assign]
        vectors = await backend.embed(TEXTS, EmbedKind.PASSAGE)
        encoder.encode = plain_encode  # type: ignore[method-assign]
    finally:
        await backend.close()
    assert most == 2

    # The same batches one at a time (USE's vectors depend on a batch's padding, so the
    # reference must cut the same batches: sorted by length, 4 a batch).
    alone = UseEncoder(threads=1)
    assert alone.calls == 1
    order = np.argsort([len(text) for text in TEXTS], kind="stable")
    ordered = [TEXTS[i] for i in order]
    expected = np.empty_like(vectors)
    expected[order] = np.concatenate(
        [alone.encode(ordered[start : start + 4], EmbedKind.PASSAGE) for start in range(0, len(TEXTS), 4)]
    )
    np.testing.assert_allclose(vectors, l2_normalise(expected), atol=1e-5)


async def test_a_query_waits_for_one_round_of_a_large_call_not_all_of_it() -> None:
    """Passages go in rounds of ``calls`` batches, so a query that arrives meanwhile is queued
    behind at most one round, not behind every batch of the call."""
    backend = LocalBackend(make_settings(local_model="use", local_threads=2, batch_size=2))
    await backend.start()
    try:
        encoder = backend._encoder
        assert encoder is not None
        order: list[str] = []
        plain_encode = encoder.encode

        def recording(texts: list[str], kind: EmbedKind) -> np.ndarray:
            time.sleep(0.02)
            order.append("query" if kind is EmbedKind.QUERY else "passages")
            return plain_encode(texts, kind)

        encoder.encode = recording  # type: ignore[method-assign]
        ingest = asyncio.create_task(backend.embed(TEXTS[:24], EmbedKind.PASSAGE))  # 12 batches
        while not order:
            await asyncio.sleep(0.001)
        await backend.embed(["年假有几天？"], EmbedKind.QUERY)
        await ingest
        encoder.encode = plain_encode  # type: ignore[method-assign]
    finally:
        await backend.close()
    assert order.count("passages") == 12
    assert order.index("query") <= 4  # behind at most the round it met and the next
