"""Delta coalescing between the generation and the gRPC stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.common.errors import DependencyUnavailable
from services.generate.coalesce import coalesced
from services.generate.domain import Chunk, Usage

FINAL = Chunk(finish_reason="stop", usage=Usage(3, 5))


async def paced(deltas: list[str], pause_s: float | None, fail: bool = False) -> AsyncIterator[Chunk]:
    for delta in deltas:
        if pause_s is not None:
            await asyncio.sleep(pause_s)
        yield Chunk(delta=delta)
    if fail:
        raise DependencyUnavailable("upstream broke")
    yield FINAL


async def test_a_free_stream_gets_every_delta_on_its_own() -> None:
    out = [c async for c in coalesced(paced(["a", "b", "c"], pause_s=0.01))]
    assert out == [Chunk(delta="a"), Chunk(delta="b"), Chunk(delta="c"), FINAL]


async def test_deltas_that_piled_up_are_joined_in_order() -> None:
    """A consumer busy elsewhere (here: sleeping) receives what accumulated, as one delta."""
    out: list[Chunk] = []
    async for chunk in coalesced(paced(["a", "b", "c", "d"], pause_s=0)):
        out.append(chunk)
        await asyncio.sleep(0.05)
    assert "".join(c.delta for c in out) == "abcd"
    assert len(out) < 5 and out[-1] == FINAL


async def test_an_error_comes_after_the_text_before_it() -> None:
    seen: list[str] = []
    with pytest.raises(DependencyUnavailable, match="upstream broke"):
        async for chunk in coalesced(paced(["a", "b"], pause_s=0, fail=True)):
            seen.append(chunk.delta)
    assert "".join(seen) == "ab"


async def test_closing_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[Chunk]:
        try:
            while True:
                await asyncio.sleep(0.001)
                yield Chunk(delta="x")
        finally:
            closed.set()

    stream = coalesced(endless())
    await anext(stream)
    await stream.aclose()
    await asyncio.wait_for(closed.wait(), timeout=5)
