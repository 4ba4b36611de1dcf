"""Cross-job embedding batches for the worker: many small files, few large Embed calls.

A knowledge base is mostly small files (a few chunks each), and one Embed call per file
leaves the model idle between round trips and runs it on tiny batches. The worker's job
threads therefore hand their texts to one :class:`EmbedBatcher`, which packs the texts of
every job in flight into calls of up to ``max_texts`` (waiting at most ``wait_s`` for more to
arrive) and keeps up to ``max_in_flight`` calls going, so the next batch travels while the
model works on the current one. Each caller gets exactly its own vectors back, in order, and
jobs take turns: every job in flight advances, a large one does not hold the others back.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import FailedPrecondition
from services.ingest.worker.dispatching import SlotDispatcher

log = logging.getLogger("zhiku.ingest.batcher")

# texts -> (vectors, model name); raises the mapped ZhikuError of a failed call.
EmbedCall = Callable[[list[str]], tuple[list[list[float]], str]]


@dataclass
class _Request:
    texts: list[str]
    future: Future[tuple[list[list[float]], str]] = field(default_factory=Future)


class EmbedBatcher(SlotDispatcher[list[_Request]]):
    def __init__(self, call: EmbedCall, max_texts: int, wait_s: float, max_in_flight: int = 2) -> None:
        self._call = call
        self._max_texts = max_texts
        self._wait_s = wait_s
        # Waiting requests per owner (a job), owners in turn order: each call takes the next
        # request of the owner whose turn it is, and that owner then waits for the others. A large file
        # that queued thousands of pieces at once thus shares the model with the files behind
        # it instead of holding them at 0 % until it is done.
        self._waiting: OrderedDict[str, deque[_Request]] = OrderedDict()
        self._last_owner: str | None = None
        super().__init__(max_in_flight, name="embed-batcher", pool_prefix="embed-batch")

    def submit(self, texts: list[str], owner: str = "") -> Future[tuple[list[list[float]], str]]:
        """Queue texts (at most ``max_texts``) for ``owner``; the future holds their vectors and
        the model. One owner's requests are embedded in the order submitted."""
        if not 0 < len(texts) <= self._max_texts:
            raise ValueError(f"submit 1..{self._max_texts} texts at a time, got {len(texts)}")
        request = _Request(list(texts))
        with self._changed:
            if self._closed:
                raise RuntimeError("the embed batcher is closed")
            self._waiting.setdefault(owner, deque()).append(request)
            self._changed.notify()
        return request.future

    # -- dispatcher (the loop itself: dispatching.py) ------------------------------------

    def _has_waiting(self) -> bool:
        return bool(self._waiting)

    def _drain(self) -> list[Future[Any]]:
        abandoned: list[Future[Any]] = [
            request.future for queue in self._waiting.values() for request in queue
        ]
        self._waiting.clear()
        return abandoned

    def _take(self, room: int) -> _Request | None:
        """The next request in turn if it fits in ``room`` texts (call with the lock held)."""
        while self._waiting:
            owner = next(iter(self._waiting))
            if owner == self._last_owner and len(self._waiting) > 1:
                # It just had its turn: an owner that arrived meanwhile goes first.
                self._waiting.move_to_end(owner)
                owner = next(iter(self._waiting))
            queue = self._waiting[owner]
            request = queue[0]
            cancelled = request.future.cancelled()  # a caller that gave up is dropped here
            if not cancelled and len(request.texts) > room:
                return None  # it starts the next batch
            queue.popleft()
            if not queue:
                del self._waiting[owner]
            if not cancelled:
                self._last_owner = owner
                return request
        return None

    def _gather(self) -> list[_Request] | None:
        """As many requests in turn as fit in ``max_texts``, waiting at most ``wait_s`` for
        more (the slot is already held: while every slot was busy, requests piled up)."""
        batch: list[_Request] = []
        size = 0
        deadline = time.monotonic() + self._wait_s
        with self._changed:
            while size < self._max_texts and not self._closed:
                request = self._take(self._max_texts - size)
                if request is not None:
                    batch.append(request)
                    size += len(request.texts)
                    continue
                left = deadline - time.monotonic()
                if self._waiting or left <= 0:  # the next one does not fit, or time is up
                    break
                self._changed.wait(left)
        return batch or None

    def _run(self, batch: list[_Request]) -> None:
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
