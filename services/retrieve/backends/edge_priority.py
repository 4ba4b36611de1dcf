"""Searches first: a write slice waits while a search is in flight, for a bounded time.

An engine call holds the GIL until it returns. A hybrid search at 1M makes about thirty of
them, and a write thread that takes the GIL between two of them adds its whole slice (1-3 ms
for 64 points) to the search, again at the next call. With a writer flat out, searches at
1M took twice as long as with no writer (bench-scale). Writes wait instead: a slice starts
when no search is in flight, or after ``max_wait_s``, so searches that never stop arriving
slow ingestion down to one slice per ``max_wait_s`` but never stop it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from services.retrieve.metrics import WRITE_YIELD


class SearchFirst:
    """Counts the searches in flight; write slices wait for none (or ``max_wait_s``)."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._searches = 0
        self._changed = threading.Condition()

    @contextmanager
    def searching(self) -> Iterator[None]:
        """Around a whole search, from its arrival (before it queues for a thread)."""
        with self._changed:
            self._searches += 1
        try:
            yield
        finally:
            with self._changed:
                self._searches -= 1
                if not self._searches:
                    self._changed.notify_all()

    def before_write(self) -> None:
        """Blocking, in the writing thread: return once no search is in flight, or at
        ``max_wait_s`` (0: at once)."""
        if self.max_wait_s <= 0 or not self._searches:
            return
        with WRITE_YIELD.time(), self._changed:
            self._changed.wait_for(lambda: not self._searches, timeout=self.max_wait_s)
