"""The dispatch loop that the worker's embed batcher and its coalescer share.

Both turn what many job threads queue into few calls: one dispatcher thread waits for queued
work, takes a free call slot (at most ``max_in_flight`` calls run at once), gathers what the
calls of its kind carry and hands that to a thread pool. Waiting for the slot *before*
gathering is what makes batches grow with the load: while every slot is busy, work piles up
and the next call carries more of it. A :class:`SlotDispatcher` keeps that loop, the slots
and the shutdown once; a subclass says only what waits (``_has_waiting``), what one call
carries (``_gather``), how it runs (``_run``) and whose futures a close abandons (``_drain``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

Work = TypeVar("Work")


class SlotDispatcher(ABC, Generic[Work]):
    """Subclasses set up their queue state first, then call ``super().__init__``, which
    starts the dispatcher thread (the thread reads that state at once). They queue under
    ``self._changed`` and notify it; ``self._closed`` says whether they may still queue."""

    def __init__(self, max_in_flight: int, name: str, pool_prefix: str) -> None:
        self._changed = threading.Condition()
        self._slots = threading.Semaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix=pool_prefix)
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name=name, daemon=True)
        self._dispatcher.start()

    @abstractmethod
    def _has_waiting(self) -> bool:
        """Whether anything is queued (called with the lock held)."""

    @abstractmethod
    def _gather(self) -> Work | None:
        """What the next call carries, taken off the queue, or None when nothing is to go
        (called with a call slot held, without the lock)."""

    @abstractmethod
    def _run(self, work: Work) -> None:
        """Make one call and answer its futures (in the pool; the slot is released after)."""

    @abstractmethod
    def _drain(self) -> list[Future[Any]]:
        """Empty the queue and return the futures it held (called with the lock held)."""

    def close(self) -> None:
        """Refuse new work, cancel what still waits and stop the dispatcher; calls already
        running are not waited for."""
        with self._changed:
            self._closed = True
            abandoned = self._drain()
            self._changed.notify()
        for future in abandoned:
            future.cancel()
        self._dispatcher.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _dispatch(self) -> None:
        while True:
            with self._changed:
                while not self._has_waiting() and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
            # A free slot first: while every call is running, work piles up for the next one.
            self._slots.acquire()
            work = self._gather()
            if work is None:
                self._slots.release()
            else:
                self._pool.submit(self._run_in_slot, work)

    def _run_in_slot(self, work: Work) -> None:
        try:
            self._run(work)
        finally:
            self._slots.release()
