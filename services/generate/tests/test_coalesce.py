"""Delta coalescing between the generation and the gRPC stream."""

from __future__ import annotations

import asyncio
import itertools
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


async def test_a_minimum_interval_groups_tokens_but_not_the_first_or_the_end() -> None:
    """Tokens 10 ms apart with a 45 ms interval: the first alone and at once, then about four
    per message, and the final chunk right after the last token, not an interval later."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    arrivals: list[tuple[float, Chunk]] = []
    async for chunk in coalesced(paced(list("abcdefghijkl"), pause_s=0.01), min_interval_s=0.045):
        arrivals.append((loop.time() - started, chunk))
    deltas = [chunk.delta for _, chunk in arrivals if chunk.delta]
    assert "".join(deltas) == "abcdefghijkl"
    assert deltas[0] == "a" and arrivals[0][0] < 0.03
    assert 3 <= len(deltas) <= 6, deltas  # one message per interval, not one per token
    assert arrivals[-1][1] == FINAL
    # The generation ends ~0.12 s in; the last text and the final chunk leave with it.
    assert arrivals[-1][0] < 0.12 + 0.03
    # Between text messages at least the interval, except before the one the end cut short.
    sent = [at for at, chunk in arrivals if chunk.delta]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent[:-1])]
    assert all(gap >= 0.04 for gap in gaps), gaps


async def test_a_minimum_interval_never_delays_a_short_answer() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = [c async for c in coalesced(paced(["only"], pause_s=0.0), min_interval_s=0.5)]
    assert out == [Chunk(delta="only"), FINAL]
    assert loop.time() - started < 0.1
