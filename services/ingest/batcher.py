"""Cross-job embedding batches for the worker: many small files, few large Embed calls.

A knowledge base is mostly small files (a few chunks each), and one Embed call per file
leaves the model idle between round trips and runs it on tiny batches. The worker's job
threads therefore hand their texts to one :class:`EmbedBatcher`, which packs the texts of
every job in flight into calls of up to ``max_texts`` (waiting at most ``wait_s`` for more to
arrive) and keeps up to ``max_in_flight`` calls going, so the next batch travels while the
model works on the current one. Each caller gets exactly its own vectors back, in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from services.common.errors import FailedPrecondition

log = logging.getLogger("zhiku.ingest.batcher")

# texts -> (vectors, model name); raises the mapped ZhikuError of a failed call.
EmbedCall = Callable[[list[str]], tuple[list[list[float]], str]]


@dataclass
class _Request:
    texts: list[str]
    future: Future[tuple[list[list[float]], str]] = field(default_factory=Future)


class EmbedBatcher:
    def __init__(self, call: EmbedCall, max_texts: int, wait_s: float, max_in_flight: int = 2) -> None:
        self._call = call
        self._max_texts = max_texts
        self._wait_s = wait_s
        self._pending: queue.Queue[_Request | None] = queue.Queue()
        self._slots = threading.Semaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="embed-batch")
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="embed-batcher", daemon=True)
        self._dispatcher.start()

    def submit(self, texts: list[str]) -> Future[tuple[list[list[float]], str]]:
        """Queue texts (at most ``max_texts``); the future holds their vectors and the model."""
        if not 0 < len(texts) <= self._max_texts:
            raise ValueError(f"submit 1..{self._max_texts} texts at a time, got {len(texts)}")
        if self._closed:
            raise RuntimeError("the embed batcher is closed")
        request = _Request(list(texts))
        self._pending.put(request)
        return request.future

    def close(self) -> None:
        self._closed = True
        self._pending.put(None)
        self._dispatcher.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- dispatcher -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        carry: _Request | None = None
        while True:
            first = carry or self._pending.get()
            carry = None
            if first is None:
                return
            # Wait for a free call slot first: while every slot is busy, requests pile up
            # and the next call carries all of them (up to max_texts).
            self._slots.acquire()
            batch, size = [first], len(first.texts)
            deadline = time.monotonic() + self._wait_s
            while size < self._max_texts:
                try:
                    following = self._pending.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if following is None:
                    self._pending.put(None)  # finish this batch, then stop
                    break
                if size + len(following.texts) > self._max_texts:
                    carry = following  # starts the next batch
                    break
                batch.append(following)
                size += len(following.texts)
            self._pool.submit(self._run, batch)

    def _run(self, batch: list[_Request]) -> None:
        try:
            # Callers that gave up (their job failed or was cancelled) are left out.
            batch = [request for request in batch if request.future.set_running_or_notify_cancel()]
            if not batch:
                return
            texts = [text for request in batch for text in request.texts]
            try:
                vectors, model = self._call(texts)
            except BaseException as error:  # every caller must learn why its texts failed
                for request in batch:
                    request.future.set_exception(error)
                return
            if len(vectors) != len(texts):
                mismatch = FailedPrecondition(
                    f"embed service returned {len(vectors)} vectors for {len(texts)} texts"
                )
                for request in batch:
                    request.future.set_exception(mismatch)
                return
            start = 0
            for request in batch:
                end = start + len(request.texts)
                request.future.set_result((vectors[start:end], model))
                start = end
        finally:
            self._slots.release()
