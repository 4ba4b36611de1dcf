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

from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

from services.ingest.worker.dispatching import SlotDispatcher

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(SlotDispatcher[tuple[Hashable, list[tuple[Item, Future[Result]]]]]):
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
        super().__init__(max_in_flight, name=name, pool_prefix=name)

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

    # -- dispatcher (the loop itself: dispatching.py) ------------------------------------

    def _has_waiting(self) -> bool:
        return bool(self._waiting)

    def _drain(self) -> list[Future[Any]]:
        abandoned: list[Future[Any]] = [future for waiting in self._waiting.values() for _, future in waiting]
        self._waiting.clear()
        return abandoned

    def _gather(self) -> tuple[Hashable, list[tuple[Item, Future[Result]]]] | None:
        """Up to ``max_items`` of the oldest key's items; the rest of that key goes to the back."""
        with self._changed:
            if not self._waiting:
                return None
            key = next(iter(self._waiting))
            waiting = self._waiting[key]
            group, rest = waiting[: self._max_items], waiting[self._max_items :]
            if rest:
                self._waiting[key] = rest
                self._waiting.move_to_end(key)
            else:
                del self._waiting[key]
        return key, group

    def _run(self, work: tuple[Hashable, list[tuple[Item, Future[Result]]]]) -> None:
        key, group = work
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
