"""The worker's cross-job embedding batcher: packing, order, errors, cancellation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.common.errors import DependencyUnavailable, FailedPrecondition
from services.ingest.worker.batcher import EmbedBatcher


class Recorder:
    """An embed call that records its batch sizes and answers ``[len(text), index]`` vectors."""

    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None, short: bool = False) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.short = short
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> tuple[list[list[float]], str]:
        with self.lock:
            self.batches.append(len(texts))
        time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        vectors = [[float(len(text)), float(n)] for n, text in enumerate(texts)]
        return (vectors[:-1] if self.short else vectors), "model-x"


def test_concurrent_small_requests_are_packed_into_large_calls() -> None:
    call = Recorder(delay_s=0.05)
    batcher = EmbedBatcher(call, max_texts=16, wait_s=0.05, max_in_flight=1)
    try:
        texts = {job: [f"job{job}-chunk{n}" + "x" * job for n in range(3)] for job in range(20)}
        with ThreadPoolExecutor(20) as pool:
            results = dict(
                zip(texts, pool.map(lambda job: batcher.submit(texts[job]).result(10), texts), strict=True)
            )
    finally:
        batcher.close()
    for job, (vectors, model) in results.items():
        assert model == "model-x"
        assert [vector[0] for vector in vectors] == [float(len(text)) for text in texts[job]]  # its own
    assert sum(call.batches) == 60 and max(call.batches) <= 16
    assert len(call.batches) <= 8  # 20 requests of 3 texts in few calls, not 20


def test_a_failed_call_fails_exactly_its_callers() -> None:
    batcher = EmbedBatcher(Recorder(fail=DependencyUnavailable("embed down")), max_texts=8, wait_s=0.0)
    try:
        with pytest.raises(DependencyUnavailable, match="embed down"):
            batcher.submit(["a", "b"]).result(10)
    finally:
        batcher.close()
    short = EmbedBatcher(Recorder(short=True), max_texts=8, wait_s=0.0)
    try:
        with pytest.raises(FailedPrecondition, match="returned 1 vectors for 2 texts"):
            short.submit(["a", "b"]).result(10)
    finally:
        short.close()


def test_requests_are_bounded_and_cancelled_ones_are_skipped() -> None:
    call = Recorder(delay_s=0.2)
    batcher = EmbedBatcher(call, max_texts=4, wait_s=0.0, max_in_flight=1)
    try:
        with pytest.raises(ValueError, match=r"1\.\.4 texts"):
            batcher.submit(["a"] * 5)
        first = batcher.submit(["a", "b", "c", "d"])  # occupies the only slot for 0.2 s
        time.sleep(0.05)
        dropped = batcher.submit(["x"])
        assert dropped.cancel()
        kept = batcher.submit(["y", "z"])
        assert len(first.result(10)[0]) == 4 and len(kept.result(10)[0]) == 2
    finally:
        batcher.close()
    assert call.batches == [4, 2]  # the cancelled text never reached the model


def test_jobs_take_turns_so_a_large_one_does_not_hold_back_the_others() -> None:
    seen: list[str] = []

    def call(texts: list[str]) -> tuple[list[list[float]], str]:
        seen.append(texts[0][0])  # whose texts: "a" or "b"
        time.sleep(0.1)
        return [[0.0]] * len(texts), "model-x"

    batcher = EmbedBatcher(call, max_texts=2, wait_s=0.0, max_in_flight=1)
    try:
        large = [batcher.submit([f"a{n}", f"a{n}"], owner="large") for n in range(4)]
        time.sleep(0.05)  # the large job's first piece is in the model
        small = batcher.submit(["b", "b"], owner="small")
        assert len(small.result(10)[0]) == 2 and all(len(piece.result(10)[0]) == 2 for piece in large)
    finally:
        batcher.close()
    assert seen == ["a", "b", "a", "a", "a"]  # the small job's piece went next, not last
