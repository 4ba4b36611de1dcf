"""Many jobs' small calls as few large ones: the worker's catalog writes and Upserts, coalesced.

A bulk import is mostly files of a few chunks, and each job used to make its own claim and
success transactions and its own Upsert RPC: on SQLite every write transaction takes the
database's one write lock, so the jobs queued behind each other, and each round trip cost as
much CPU as the work it carried. A :class:`Coalescer` hands the items that job threads submit
to one ``handle(key, items)`` call per group of items sharing a key (a collection, or
none), at most ``max_items`` at a time and ``max_in_flight`` calls at once. It never waits
for company: a lone item goes at once, and items that arrive while calls are running form
the next group, so batches grow exactly when the load does.

``handle`` answers one result per item, in order; an exception answers every item of the
call with that exception (each job then reacts as it would to its own failed call).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        handle: Callable[[Hashable, list[Item]], list[Result]],
        max_items: int,
        max_in_flight: int = 1,
        name: str = "coalescer",
    ) -> None:
        if max_items < 1 or max_in_flight < 1:
            raise ValueError("max_items and max_in_flight must be positive")
        self._handle = handle
        self._max_items = max_items
        # Waiting items per key, keys in arrival order (the oldest key's items go first).
        self._waiting: OrderedDict[Hashable, list[tuple[Item, Future[Result]]]] = OrderedDict()
        self._changed = threading.Condition()
        self._slots = threading.Semaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix=name)
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name=name, daemon=True)
        self._dispatcher.start()

    def submit(self, key: Hashable, item: Item) -> Future[Result]:
        future: Future[Result] = Future()
        with self._changed:
            if self._closed:
                raise RuntimeError("the coalescer is closed")
            self._waiting.setdefault(key, []).append((item, future))
            self._changed.notify()
        return future

    def call(self, key: Hashable, item: Item) -> Result:
        """Submit and wait for the result (or the call's exception)."""
        return self.submit(key, item).result()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            abandoned = [future for waiting in self._waiting.values() for _, future in waiting]
            self._waiting.clear()
            self._changed.notify()
        for future in abandoned:
            future.cancel()
        self._dispatcher.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _dispatch(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
            # A free slot first: while every call is running, items pile up into the next group.
            self._slots.acquire()
            with self._changed:
                if not self._waiting:
                    self._slots.release()
                    continue
                key = next(iter(self._waiting))
                waiting = self._waiting[key]
                group, rest = waiting[: self._max_items], waiting[self._max_items :]
                if rest:
                    self._waiting[key] = rest
                    self._waiting.move_to_end(key)
                else:
                    del self._waiting[key]
            self._pool.submit(self._run, key, group)

    def _run(self, key: Hashable, group: list[tuple[Item, Future[Result]]]) -> None:
        try:
            live = [(item, future) for item, future in group if future.set_running_or_notify_cancel()]
            if not live:
                return
            try:
                results = self._handle(key, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"{len(results)} results for {len(live)} items")
            except BaseException as error:  # every submitter must learn why its item failed
                for _, future in live:
                    future.set_exception(error)
                return
            for (_, future), result in zip(live, results, strict=True):
                future.set_result(result)
        finally:
            self._slots.release()
