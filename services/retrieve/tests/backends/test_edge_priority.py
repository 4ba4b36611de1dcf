"""Searches first (edge_priority.py): write slices wait for searches in flight, bounded."""

from __future__ import annotations

import threading

from services.retrieve.backends.edge_priority import SearchFirst
from services.retrieve.metrics import WRITE_YIELD


def write_in_thread(gate: SearchFirst) -> threading.Event:
    """Start a writer thread that passes ``before_write``; the event is set once it has."""
    passed = threading.Event()

    def write() -> None:
        gate.before_write()
        passed.set()

    threading.Thread(target=write, daemon=True).start()
    return passed


def waits_observed() -> float:
    """How many writes have waited (the histogram's count)."""
    samples = next(iter(WRITE_YIELD.collect())).samples
    return next(sample.value for sample in samples if sample.name.endswith("_count"))


def test_a_write_waits_for_every_search_in_flight_and_goes_when_the_last_ends() -> None:
    gate = SearchFirst(max_wait_s=30.0)
    before = waits_observed()
    with gate.searching():
        with gate.searching():
            passed = write_in_thread(gate)
            assert not passed.wait(0.3)
        assert not passed.wait(0.3)  # one search still in flight
    assert passed.wait(10)
    assert waits_observed() == before + 1


def test_the_wait_is_bounded_so_searches_never_stop_writes() -> None:
    gate = SearchFirst(max_wait_s=0.05)
    with gate.searching():
        assert write_in_thread(gate).wait(10)


def test_no_search_or_no_yield_means_no_wait() -> None:
    before = waits_observed()
    assert write_in_thread(SearchFirst(max_wait_s=30.0)).wait(10)
    with (gate := SearchFirst(max_wait_s=0.0)).searching():
        assert write_in_thread(gate).wait(10)
    assert waits_observed() == before
