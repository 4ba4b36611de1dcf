"""The coalescer: many threads' items become few calls, each item gets its own result or error."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.ingest.worker.coalescer import Coalescer


class Recorder:
    """A handler that records its calls and, until released, holds the first one."""

    def __init__(self) -> None:
        self.calls: list[tuple[Hashable, list[int]]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: Hashable, items: list[int]) -> list[str]:
        self.calls.append((key, list(items)))
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.release.wait(10)
        if any(item < 0 for item in items):
            raise ValueError(f"negative item in {items}")
        return [f"{key}:{item * 10}" for item in items]


def test_a_lone_item_goes_at_once_and_waiting_ones_share_the_next_call() -> None:
    handler = Recorder()
    coalescer: Coalescer[int, str] = Coalescer(handler, max_items=3)
    try:
        first = coalescer.submit("kb", 1)
        assert handler.first_started.wait(10)  # no waiting for company
        later = [coalescer.submit("kb", item) for item in (2, 3, 4, 5)]
        other = coalescer.submit("other", 6)
        handler.release.set()
        assert first.result(10) == "kb:10"
        assert [future.result(10) for future in later] == ["kb:20", "kb:30", "kb:40", "kb:50"]
        assert other.result(10) == "other:60"
    finally:
        coalescer.close()
    # One call per key and at most max_items per call, in arrival order.
    assert handler.calls[0] == ("kb", [1])
    assert sorted(handler.calls[1:]) == [("kb", [2, 3, 4]), ("kb", [5]), ("other", [6])]


def test_a_failed_call_fails_each_of_its_items_and_no_other() -> None:
    handler = Recorder()
    coalescer: Coalescer[int, str] = Coalescer(handler, max_items=10)
    try:
        first = coalescer.submit("kb", 1)
        assert handler.first_started.wait(10)
        bad = [coalescer.submit("kb", item) for item in (2, -3)]
        good = coalescer.submit("fine", 4)
        handler.release.set()
        assert first.result(10) == "kb:10"
        for future in bad:
            with pytest.raises(ValueError, match="negative item"):
                future.result(10)
        assert good.result(10) == "fine:40"
    finally:
        coalescer.close()


def test_a_cancelled_item_is_left_out_of_its_call() -> None:
    handler = Recorder()
    coalescer: Coalescer[int, str] = Coalescer(handler, max_items=10)
    try:
        coalescer.submit("kb", 1)
        assert handler.first_started.wait(10)
        dropped = coalescer.submit("kb", 2)
        kept = coalescer.submit("kb", 3)
        assert dropped.cancel()
        handler.release.set()
        assert kept.result(10) == "kb:30"
    finally:
        coalescer.close()
    assert handler.calls[1] == ("kb", [3])


def test_many_threads_get_exactly_their_own_results() -> None:
    def handle(key: Hashable, items: list[int]) -> list[int]:
        return [item * 2 for item in items]

    coalescer: Coalescer[int, int] = Coalescer(handle, max_items=8, max_in_flight=2)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda n: coalescer.call(n % 3, n), range(500)))
    finally:
        coalescer.close()
    assert results == [n * 2 for n in range(500)]


def test_a_closed_coalescer_refuses_items() -> None:
    coalescer: Coalescer[int, int] = Coalescer(lambda _, items: items, max_items=1)
    coalescer.close()
    with pytest.raises(RuntimeError, match="closed"):
        coalescer.submit(None, 1)
