"""Dynamic batching of query embeddings: concurrent Embed calls share one backend call.

Every search embeds one short question. Embedded one at a time, the bundled models spend
much of each call on what a call costs whatever it carries (the hand-off to the model
thread, waking the engine's threads, the graph's fixed work): USE embeds 545 questions/s
one by one and 2,300/s 32 at a time on 2 cores; e5 73/s and 94/s. Under concurrent
searches the calls also queue one behind another, so latency grows with every client.

The batcher queues the queries of concurrent requests and runs them as one backend call,
then hands each caller its own rows. It batches continuously, as text-embeddings-inference
and vLLM do: an idle backend starts a lone request at once (no window to pay), and the
requests that arrive while it is busy wait for that call to end and then go together, up
to ``max_texts``. ``window_s`` > 0 makes a request that finds the backend idle wait up to
that long for company (Triton's queue delay); under load the oldest request has waited
longer than that already, so the window only ever delays light traffic.

A caller that gives up (its deadline passed, it was cancelled) leaves the queue; if its
call is already running, the others still get their rows. A merged call that fails for a
reason the backend as a whole has (down, overloaded, misconfigured: every caller would see
it alone too) fails every caller with that error; any other failure (a text the tokenizer
rejects, a model error) is retried request by request, so only the request that caused it
fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from services.common.errors import DependencyUnavailable, FailedPrecondition, ResourceExhausted
from services.embed.metrics import BATCH_QUEUE_SECONDS, BATCH_REQUESTS

# texts -> their (len(texts), dimension) vectors, in order
BatchCall = Callable[[list[str]], Awaitable[np.ndarray]]

# Failures of the backend as a whole: retrying request by request would only repeat them.
_SHARED_FAILURES = (DependencyUnavailable, ResourceExhausted, FailedPrecondition)


@dataclass(eq=False)
class _Waiting:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    arrived: float


class DynamicBatcher:
    """Merges concurrent ``embed`` calls into backend calls of up to ``max_texts`` texts.

    ``max_in_flight`` backend calls run at once: 1 for a local model (one model thread;
    a second call would only queue behind it, with fewer texts), more for a remote server
    that batches across clients itself. A request with more texts than ``max_texts`` is
    never split: it runs as one call of its own (the backend cuts it as it needs).
    """

    def __init__(
        self, call: BatchCall, *, backend: str, max_texts: int, window_s: float, max_in_flight: int
    ) -> None:
        if max_texts < 1 or max_in_flight < 1 or window_s < 0:
            raise ValueError("max_texts and max_in_flight must be >= 1 and window_s >= 0")
        self._call = call
        self._backend = backend
        self._max_texts = max_texts
        self._window_s = window_s
        self._queue: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    async def embed(self, texts: list[str]) -> np.ndarray:
        """``texts``' vectors, computed together with whatever other requests are waiting."""
        if self._closed:
            raise DependencyUnavailable("the embed service is shutting down; retry on another replica")
        loop = asyncio.get_running_loop()
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(self._dispatch(), name="embed-batcher")
        waiting = _Waiting(list(texts), loop.create_future(), loop.time())
        self._queue.append(waiting)
        self._arrived.set()
        # A cancelled caller cancels this future too, which takes it out of any batch to come.
        return await waiting.future

    async def close(self) -> None:
        """Stop dispatching; requests still queued fail with UNAVAILABLE, running calls are cancelled."""
        self._closed = True
        tasks = [task for task in (self._dispatcher, *self._running) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            waiting = self._queue.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(DependencyUnavailable("the embed service is shutting down"))

    # -- dispatcher ---------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._drop_abandoned():
                # While every slot is busy, requests pile up: the next call carries them all.
                await self._slots.acquire()
                if self._window_s:
                    await self._wait_for_company()
                batch = self._take_batch()
                if not batch:
                    self._slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._run(batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    def _drop_abandoned(self) -> bool:
        """Drop the callers at the head of the queue that gave up; True if any request waits."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return bool(self._queue)

    def _queued_texts(self) -> int:
        return sum(len(waiting.texts) for waiting in self._queue if not waiting.future.done())

    async def _wait_for_company(self) -> None:
        """Until the oldest request has waited ``window_s`` or a full batch is queued."""
        loop = asyncio.get_running_loop()
        while self._drop_abandoned() and self._queued_texts() < self._max_texts:
            remaining = self._queue[0].arrived + self._window_s - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    def _take_batch(self) -> list[_Waiting]:
        """The oldest live requests whose texts fit in ``max_texts`` (the first one always)."""
        batch: list[_Waiting] = []
        size = 0
        while self._drop_abandoned():
            following = self._queue[0]
            if batch and size + len(following.texts) > self._max_texts:
                break
            batch.append(self._queue.popleft())
            size += len(following.texts)
        return batch

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            live = [waiting for waiting in batch if not waiting.future.done()]
            if not live:
                return
            now = asyncio.get_running_loop().time()
            for waiting in live:
                BATCH_QUEUE_SECONDS.labels(self._backend).observe(now - waiting.arrived)
            BATCH_REQUESTS.labels(self._backend).observe(len(live))
            try:
                vectors = await self._call([text for waiting in live for text in waiting.texts])
            except asyncio.CancelledError:  # close(): no caller may wait forever
                for waiting in live:
                    _settle(waiting, DependencyUnavailable("the embed service is shutting down"))
                raise
            except Exception as error:
                if len(live) == 1 or isinstance(error, _SHARED_FAILURES):
                    for waiting in live:
                        _settle(waiting, error)
                    return
                await self._run_one_by_one(live)
                return
            start = 0
            for waiting in live:
                end = start + len(waiting.texts)
                _settle(waiting, vectors[start:end])
                start = end
        finally:
            self._slots.release()

    async def _run_one_by_one(self, live: list[_Waiting]) -> None:
        """After a merged call failed: each request alone, so the failure stays with its cause."""
        for waiting in live:
            if waiting.future.done():
                continue
            try:
                _settle(waiting, await self._call(waiting.texts))
            except Exception as error:
                _settle(waiting, error)


def _settle(waiting: _Waiting, outcome: np.ndarray | Exception) -> None:
    """Hand the caller its outcome (its vectors or the error), unless it gave up meanwhile."""
    if waiting.future.done():
        return
    if isinstance(outcome, Exception):
        waiting.future.set_exception(outcome)
    else:
        waiting.future.set_result(outcome)
