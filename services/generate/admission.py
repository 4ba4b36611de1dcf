"""Admission to a generation slot: a FIFO queue whose wait is bounded, refusing early.

A generation that cannot start within ``max_wait_s`` is refused with :class:`Overloaded`
(UNAVAILABLE, HTTP 503 at the gateway) and a ``retry-after``, instead of holding the client
until its deadline (measured before this existed: 32 concurrent chats on llama.cpp waited up
to 300 s and a third ended in 504). The rule, in order, for a call that finds every slot busy:

1. ``max_waiting`` calls already queued: refused at once (``queue_full``), a hard cap on
   what a burst can pile up, whatever the estimate says;
2. the expected wait over ``max_wait_s``: refused at once (``wait_estimate``). Expected wait
   = (calls queued ahead + 1) x mean service time / slots, the service time being how long a
   slot was held, averaged over the last ``SERVICE_TIME_WINDOW`` generations. Until one has
   finished there is no estimate, and only rule 3 applies;
3. otherwise it queues, and one that still has no slot after ``max_wait_s`` leaves the queue
   refused (``wait_timeout``): the estimate can be wrong (answers of very different lengths),
   the bound cannot.

The ``retry-after`` sent with a refusal is the expected wait of a call arriving now, i.e. when
the slots will have worked through what is queued at this moment (``max_wait_s`` while there
is no estimate yet): an honest "not before", not a promise.

Metrics: ``requests_waiting`` (queue length), ``requests_running``, ``queue_wait_seconds``
(admitted calls) and ``requests_rejected_total`` by reason.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from services.common.errors import Overloaded
from services.generate.metrics import QUEUE_WAIT, REJECTED, RUNNING, WAITING

RejectReason = Literal["queue_full", "wait_estimate", "wait_timeout"]
REJECT_REASONS: tuple[RejectReason, ...] = ("queue_full", "wait_estimate", "wait_timeout")
# Recent enough to follow a change of load (longer answers, a slower upstream), long enough
# that one odd answer does not swing the estimate.
SERVICE_TIME_WINDOW = 32


class Admission:
    """``slots`` generations at once; the rest wait in FIFO order, at most ``max_wait_s``."""

    def __init__(self, backend: str, slots: int, max_waiting: int, max_wait_s: float) -> None:
        if slots < 1:
            raise ValueError("an admission needs at least one slot")
        self.backend = backend
        self.slots = slots
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self._semaphore = asyncio.Semaphore(slots)
        self._waiting = 0
        self._service_times: deque[float] = deque(maxlen=SERVICE_TIME_WINDOW)
        # Every series exists from the start, at 0: a queue that never formed still shows as 0.
        RUNNING.labels(backend)
        WAITING.labels(backend)
        for reason in REJECT_REASONS:
            REJECTED.labels(backend, reason)

    def expected_wait_s(self, ahead: int) -> float | None:
        """Seconds until a call with ``ahead`` calls queued before it gets a slot; None until
        a generation has finished (no service time to go by)."""
        if not self._service_times:
            return None
        return (ahead + 1) * statistics.fmean(self._service_times) / self.slots

    def _refusal(self, reason: RejectReason, why: str) -> Overloaded:
        REJECTED.labels(self.backend, reason).inc()
        expected = self.expected_wait_s(self._waiting)
        retry_after = self.max_wait_s if expected is None else expected
        return Overloaded(
            f"generation is at capacity ({self.slots} running, {self._waiting} waiting): {why}; "
            f"retry in about {max(1, math.ceil(retry_after))} s",
            retry_after_s=retry_after,
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body of the ``async with``, or raise :class:`Overloaded`."""
        if self._semaphore.locked():
            await self._queue()
        else:
            await self._semaphore.acquire()  # free: returns without suspending
            QUEUE_WAIT.labels(self.backend).observe(0.0)
        RUNNING.labels(self.backend).inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            RUNNING.labels(self.backend).dec()
            self._service_times.append(time.perf_counter() - started)
            self._semaphore.release()

    async def _queue(self) -> None:
        if self._waiting >= self.max_waiting:
            raise self._refusal("queue_full", f"{self.max_waiting} calls queued already")
        expected = self.expected_wait_s(self._waiting)
        if expected is not None and expected > self.max_wait_s:
            raise self._refusal(
                "wait_estimate", f"expected wait {expected:.1f} s is over the {self.max_wait_s:g} s bound"
            )
        self._waiting += 1
        WAITING.labels(self.backend).inc()
        queued = time.perf_counter()
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._semaphore.acquire()
        except TimeoutError:
            raise self._refusal("wait_timeout", f"no slot within the {self.max_wait_s:g} s bound") from None
        finally:
            self._waiting -= 1
            WAITING.labels(self.backend).dec()
        QUEUE_WAIT.labels(self.backend).observe(time.perf_counter() - queued)
