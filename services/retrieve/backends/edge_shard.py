"""One Qdrant Edge shard of a knowledge base: concurrency, journal and index builds.

A knowledge base is several such shards (see :mod:`.edge_collection` for the layout, the
sealing policy and how searches merge them); this module is about one of them. Its files, in
the collection directory (``~`` never appears in collection names, so transient entries can
never collide)::

    <dir>/                 the engine's directory (WAL, segments, edge_config.json)
    <dir>.optimizing~      transient: copy being indexed by the optimizer child process
    <dir>.retired~         transient: the previous shard while a swap is in progress
    ~trash-<dir>           transient: a retired shard being deleted

Why index builds copy and swap: the engine's ``optimize()`` holds the GIL for its whole run
(seconds at 10k x 384-d, minutes beyond), which would freeze the event loop and every RPC,
health checks included. So the build runs on a copy in a child process while the live shard
keeps serving reads and writes; every write made meanwhile is journalled. Once the child is
done, the journal so far is applied to the copy while the live shard still serves; the swap
then pauses calls for a moment (close, rename, load the indexed copy, apply the writes made
since), and replaying is safe because writes are idempotent (upserts by id, deletes by filter
or id). Renaming ``<dir>.retired~`` to ``~trash-<dir>`` is the commit point: a crash before it
leaves the retired shard authoritative and :func:`recover` restores it. A build copies only
its own shard, never the whole knowledge base: that is what sharding buys.

The engine allows one opener per shard directory (WAL lock), so one :class:`ShardUnit`
owns the shard; a gate lets many calls share it and gives close and swap exclusive use.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    Modifier,
    PayloadSchemaType,
    ScalarQuantizationConfig,
    ScalarType,
    UpdateOperation,
)

from services.common.errors import NotFound
from services.common.sparse import SPARSE
from services.retrieve.backends.edge_terms import TermStats
from services.retrieve.domain import ACL, DENSE, FILE_NAME
from services.retrieve.metrics import OPTIMIZE_RUNS, OPTIMIZE_SECONDS

if TYPE_CHECKING:
    from services.retrieve.config import RetrieveSettings

log = logging.getLogger("zhiku.retrieve.edge")

T = TypeVar("T")

# The first shard of every collection (the only one before sharding).
SHARD_DIR = "shard"
OPTIMIZING_SUFFIX = ".optimizing~"
RETIRED_SUFFIX = ".retired~"
TRASH_PREFIX = "~trash-"
OPTIMIZING_DIR = SHARD_DIR + OPTIMIZING_SUFFIX
RETIRED_DIR = SHARD_DIR + RETIRED_SUFFIX
# ``Modifier.None`` is not valid Python syntax.
_NO_MODIFIER = getattr(Modifier, "None")
# The engine's default indexing threshold: optimize() indexes a segment only once its dense
# vectors fill this many KB (measured: 3,000 x 512-d points left unindexed, 6,000 indexed).
ENGINE_INDEXING_THRESHOLD_KB = 10_000
# int8 quantization bounds: the 0.99 quantile of the values, as the server backend's default.
QUANTILE = 0.99


@dataclass(frozen=True, slots=True)
class ShardOptions:
    """The settings a shard needs, taken once from RetrieveSettings."""

    optimize_delay_s: float
    optimize_min_unindexed: int
    optimize_timeout_s: float
    optimize_nice: int
    indexing_threshold_kb: int | None
    search_threads: int | None
    hnsw_ef: int | None = None
    quantization: bool = False
    quantization_oversampling: float = 2.0
    hybrid_candidates: int = 50
    shard_points: int = 10_000
    shard_growth: float = 0.1
    merge_fraction: float = 0.1

    @classmethod
    def from_settings(cls, settings: RetrieveSettings) -> ShardOptions:
        return cls(
            optimize_delay_s=settings.edge_optimize_delay_s,
            optimize_min_unindexed=settings.edge_optimize_min_unindexed,
            optimize_timeout_s=settings.edge_optimize_timeout_s,
            optimize_nice=settings.edge_optimize_nice,
            indexing_threshold_kb=settings.edge_indexing_threshold_kb,
            search_threads=settings.edge_search_threads,
            hnsw_ef=settings.edge_hnsw_ef,
            quantization=settings.edge_quantization == "int8",
            quantization_oversampling=settings.edge_quantization_oversampling,
            hybrid_candidates=settings.hybrid_candidates,
            shard_points=settings.edge_shard_points,
            shard_growth=settings.edge_shard_growth,
            merge_fraction=settings.edge_merge_fraction,
        )

    def tail_to_build(self, dimension: int) -> int:
        """Unindexed points worth a build in a collection that already has an index.

        ``optimize_min_unindexed`` (20k) decides a collection's first index, when an exact
        scan of everything is still cheap. Once a collection has an index, the points written
        since are scanned exactly on every search next to it, and a tail of 10-20k such points
        makes a hybrid search at 100k three to four times slower (1.4 -> 3.4 / 5.2 ms, 512-d).
        So the tail is built as soon as the engine will index it: when its vectors fill the
        engine's indexing threshold (plus a tenth, so a build is never started just below the
        line, where the engine would find nothing to do). Below that the tail costs at most
        about 0.3 ms a search (5,000 x 512-d)."""
        threshold_kb = self.indexing_threshold_kb or ENGINE_INDEXING_THRESHOLD_KB
        fills = math.ceil(1.1 * threshold_kb * 1024 / (4 * dimension))
        return min(self.optimize_min_unindexed, fills)


async def run_blocking(executor: Executor, fn: Callable[[], T]) -> T:
    """Run ``fn`` in ``executor``; when cancelled, still wait for the thread to return.

    An engine call cannot be interrupted; returning early would let close or swap touch the
    shard while the call still runs.
    """
    future = asyncio.get_running_loop().run_in_executor(executor, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise


async def run_to_completion(work: Awaitable[T]) -> T:
    """Await ``work``; when cancelled, let it finish first (then re-raise), as run_blocking
    does for a thread: steps that must happen together are not split by a caller leaving,
    and locks the caller holds are released only after the last of them."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


class Gate:
    """Many shared users, or one exclusive holder (swap, close) that waits for them to leave.

    An exclusive request blocks new shared users, so a swap is never starved by traffic.
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._users = 0
        self._exclusive = False
        self.closed = False

    @asynccontextmanager
    async def shared(self, when_closed: Callable[[], Exception]) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            if self.closed:
                raise when_closed()
            self._users += 1
        try:
            yield
        finally:
            async with self._cond:
                self._users -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            try:
                await self._cond.wait_for(lambda: self._users == 0)
            except BaseException:
                self._exclusive = False
                self._cond.notify_all()
                raise
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


def edge_config(
    dimension: int, options: ShardOptions, sparse: bool = True, engine_idf: bool = False
) -> EdgeConfig:
    """The engine config of one shard. ``engine_idf``: the shard weights sparse terms by the
    engine's own IDF (first shards of collections made before sharding); other shards store
    plain weights and get the global IDF with the query (:mod:`.edge_terms`)."""
    optimizers = (
        EdgeOptimizersConfig(indexing_threshold=options.indexing_threshold_kb)
        if options.indexing_threshold_kb is not None
        else None
    )
    return EdgeConfig(
        vectors={
            DENSE: EdgeVectorParams(
                size=dimension,
                distance=Distance.Cosine,
                quantization_config=(
                    ScalarQuantizationConfig(type=ScalarType.Int8, quantile=QUANTILE)
                    if options.quantization
                    else None
                ),
            )
        },
        sparse_vectors=(
            {SPARSE: EdgeSparseVectorParams(modifier=Modifier.Idf if engine_idf else _NO_MODIFIER)}
            if sparse
            else None
        ),
        optimizers=optimizers,
        max_search_threads=options.search_threads,
    )


def recover(root: Path) -> None:
    """Finish or undo interrupted swaps and builds of every shard under a collection
    directory (see the module docstring)."""
    for entry in sorted(root.iterdir()):
        if entry.name.endswith(RETIRED_SUFFIX):
            live = root / entry.name[: -len(RETIRED_SUFFIX)]
            if live.exists():
                shutil.rmtree(live)
            os.rename(entry, live)
            log.warning("restored %s/%s after an interrupted index swap", root.name, live.name)
    for entry in root.iterdir():
        # "~trash" alone: the retired shard of a build from before sharding.
        if entry.name.endswith(OPTIMIZING_SUFFIX) or entry.name.startswith("~trash"):
            shutil.rmtree(entry, ignore_errors=True)


def create_shard(path: Path, config: EdgeConfig) -> None:
    """Blocking: a new empty engine shard with the payload indexes every search relies on."""
    shard = EdgeShard.create(str(path), config)
    try:
        shard.update(UpdateOperation.create_field_index(FILE_NAME, PayloadSchemaType.Keyword))
        shard.update(UpdateOperation.create_field_index(ACL, PayloadSchemaType.Keyword))
        shard.flush()
    finally:
        shard.close()


async def run_optimizer(path: Path, options: ShardOptions) -> dict[str, Any]:
    """Build the index of a shard directory nobody has open, in the optimizer child process
    (see the module docstring); returns its report. Killed on timeout or cancellation."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.retrieve.backends.edge_optimize",
        "--nice",
        str(options.optimize_nice),
        "--parent-pid",
        str(os.getpid()),
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), options.optimize_timeout_s)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        tail = err.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"optimizer exited with {process.returncode}: {tail}")
    report: dict[str, Any] = json.loads(out.decode("utf-8").strip().splitlines()[-1])
    return report


Apply = Callable[[UpdateOperation], None]
Journalled = tuple[int, UpdateOperation]
# Orders journalled writes across shards (next() on a count is atomic under the GIL).
_journal_order = itertools.count()


class ShardUnit:
    """An open engine shard plus the locks and the background index build that go with it."""

    def __init__(
        self,
        name: str,
        root: Path,
        dirname: str,
        config: EdgeConfig,
        executor: Executor,
        options: ShardOptions,
        optimize_slots: asyncio.Semaphore,
        *,
        dimension: int,
        sparse: bool,
        engine_idf: bool,
    ) -> None:
        self.name = name
        self.root = root
        self.dirname = dirname
        self.dimension = dimension
        self.sparse = sparse
        self.engine_idf = engine_idf
        self._config = config
        self._executor = executor
        self._options = options
        self._optimize_slots = optimize_slots
        self._gate = Gate()
        # Serialises writes so the journal order is the order they hit the live shard.
        self._write_lock = asyncio.Lock()
        # Writes made while a build or a merge copies the shard: (global order, write).
        self._journal: list[Journalled] | None = None
        self._last_write = 0.0
        self._scheduler: asyncio.Task[None] | None = None
        self._optimizing: asyncio.Task[str] | None = None
        # Sealed shards take no new points: they build once, then only lose points.
        self.sealed = False
        # Being merged into a new shard (edge_merge.py): journals its writes, never builds.
        self.merging = False
        # Called when a background build has finished (or found nothing to do), so the
        # owner can look for shards to merge.
        self.on_settled: Callable[[], None] | None = None
        # Live document frequencies of the sparse terms (edge_terms.py), kept by the owner.
        self.terms = TermStats()
        # The last swapped-in build's report (points, timings, writes replayed), for logs and tests.
        self.last_build: dict[str, Any] = {}
        self._closing = False
        self.shard: EdgeShard = EdgeShard.load(str(root / dirname), config)
        if ACL not in self.shard.info().payload_schema:  # made before access lists existed
            self.shard.update(UpdateOperation.create_field_index(ACL, PayloadSchemaType.Keyword))

    @property
    def optimizing_dir(self) -> Path:
        return self.root / (self.dirname + OPTIMIZING_SUFFIX)

    def _gone(self) -> Exception:
        return NotFound(f"collection {self.name!r} not found")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await run_blocking(self._executor, fn)

    # ----- access -----

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[EdgeShard]:
        """Shared use of the engine shard (no swap or close meanwhile)."""
        async with self._gate.shared(self._gone):
            yield self.shard

    async def read(self, fn: Callable[[EdgeShard], T]) -> T:
        async with self.reading() as shard:
            return await self._run(lambda: fn(shard))

    async def mutate(self, fn: Callable[[EdgeShard, Apply], T]) -> T:
        """Run ``fn`` in a worker thread with the write lock: it reads the shard as it likes
        and writes only through ``apply``, which applies to the live shard and, while an
        index build works on a copy, journals the write.

        Applying and journalling happen in the same thread call: a caller cancelled mid-call
        (deadline) must not leave an applied write out of the journal. The write lock is held
        until the thread returns (see run_blocking), so the journal cannot change hands.
        """
        wrote = False

        def apply(operation: UpdateOperation) -> None:
            nonlocal wrote
            self.shard.update(operation)
            journal = self._journal
            if journal is not None:
                journal.append((next(_journal_order), operation))
            wrote = True

        async with self._write_lock, self._gate.shared(self._gone):
            result = await self._run(lambda: fn(self.shard, apply))
        if wrote:
            self._written()
        return result

    async def start_journal(self) -> None:
        """Journal every write from now on (a merge copying this shard replays them)."""
        async with self._write_lock:
            self._journal = []

    def journal(self) -> list[Journalled]:
        """The writes journalled so far, oldest first, each with its place in the order of
        all journalled writes (a merge replays several shards' journals as one)."""
        return list(self._journal or ())

    def stop_journal(self) -> None:
        self._journal = None

    async def count(self) -> int:
        return await self.read(lambda shard: shard.count(CountRequest(exact=True)))

    async def info(self) -> tuple[int, int]:
        """(points, indexed vectors) as the engine reports them."""
        engine = await self.read(lambda shard: shard.info())
        return engine.points_count, engine.indexed_vectors_count

    @property
    def building(self) -> bool:
        """A background build is waiting for writes to settle, or running."""
        return any(task is not None and not task.done() for task in (self._scheduler, self._optimizing))

    async def index_state(self) -> tuple[int, int]:
        """(dense vectors in the HNSW index, points not in it yet: an upper bound).

        The engine reports one total of indexed vectors, and a sparse vector counts as indexed
        the moment it is written. So with sparse vectors the dense part is the total less the
        points (every point assumed to have a sparse vector; one without makes the unindexed
        count high, which at worst starts a build the engine finds nothing to do for)."""
        points, indexed = await self.info()
        dense_indexed = max(0, indexed - points) if self.sparse else indexed
        return dense_indexed, points - dense_indexed

    async def unindexed(self) -> int:
        """Points whose dense vector is not in the HNSW index yet (an upper bound)."""
        return (await self.index_state())[1]

    async def wants_build(self) -> bool:
        """Enough unindexed points for a build: 20k before the first index of the write
        shard, then a tail that fills the engine's indexing threshold
        (:meth:`ShardOptions.tail_to_build`); a sealed shard builds whatever the engine
        will index, since it takes no more points."""
        indexed, unindexed = await self.index_state()
        if indexed == 0 and not self.sealed:
            return unindexed >= self._options.optimize_min_unindexed
        return unindexed >= self._options.tail_to_build(self.dimension)

    # ----- index builds -----

    def _written(self) -> None:
        self._last_write = time.monotonic()
        self.schedule_build()

    def schedule_build(self) -> None:
        """Build once writes have settled, if enough points wait (no-op when disabled, and
        while the shard is being merged: the merged shard gets its own build)."""
        if self._options.optimize_delay_s <= 0 or self._closing or self.merging:
            return
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.create_task(
                self._optimize_when_settled(), name=f"settle-{self.name}-{self.dirname}"
            )

    async def _optimize_when_settled(self) -> None:
        """Wait for writes to pause, then build the index if enough points are unindexed."""
        delay = self._options.optimize_delay_s
        try:
            while True:
                remaining = self._last_write + delay - time.monotonic()
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    continue
                if not await self.wants_build():
                    return
                mark = self._last_write
                await self.optimize()
                if self._last_write == mark:
                    return
        except asyncio.CancelledError:
            raise
        except NotFound:
            return  # dropped meanwhile
        except Exception:
            log.exception("background index build of %s failed", self.name)
        finally:
            if self.on_settled is not None and not self._closing:
                self.on_settled()

    async def optimize(self, before_swap: Callable[[], Awaitable[None]] | None = None) -> str:
        """Build the index now (joining a build in progress); returns the outcome.

        Outcomes: ``optimized`` (swapped in), ``unchanged`` (engine had nothing to do),
        ``failed`` (logged; the live shard is untouched). ``before_swap`` runs after the
        child finished and before the swap: tests use it to write while the copy is stale.
        """
        if self.merging:
            return "unchanged"
        if self._optimizing is None or self._optimizing.done():
            self._optimizing = asyncio.create_task(
                self._optimize(before_swap), name=f"optimize-{self.name}-{self.dirname}"
            )
        return await asyncio.shield(self._optimizing)

    async def _optimize(self, before_swap: Callable[[], Awaitable[None]] | None) -> str:
        copy = self.optimizing_dir
        async with self._optimize_slots:
            started = time.perf_counter()
            outcome = "failed"
            try:
                async with self._write_lock:
                    async with self._gate.shared(self._gone):
                        await self._run(lambda: self._snapshot(copy))
                    self._journal = []
                report = await run_optimizer(copy, self._options)
                if report.get("optimized"):
                    if before_swap is not None:
                        await before_swap()
                    caught_up = len(self._journal or ())
                    await self._run(lambda: self._catch_up(copy, caught_up))
                    async with self._write_lock, self._gate.exclusive():
                        replayed = len(self._journal or ()) - caught_up
                        swap_started = time.perf_counter()
                        trash = await self._run(lambda: self._swap_in(copy, caught_up))
                        swap_ms = round((time.perf_counter() - swap_started) * 1000, 1)
                        self._journal = None
                    await self._run(lambda: shutil.rmtree(trash, ignore_errors=True))
                    outcome = "optimized"
                    fields = {
                        **report,
                        "caught_up_writes": caught_up,
                        "replayed_writes": replayed,
                        "swap_ms": swap_ms,
                    }
                    self.last_build = fields
                    log.info("index of %s/%s built", self.name, self.dirname, extra={"fields": fields})
                else:
                    outcome = "unchanged"
            except asyncio.CancelledError:
                raise
            except NotFound:
                raise
            except Exception:
                log.exception("index build of %s failed", self.name)
            finally:
                self._journal = None
                OPTIMIZE_RUNS.labels(outcome).inc()
                OPTIMIZE_SECONDS.observe(time.perf_counter() - started)
                await self._run(lambda: shutil.rmtree(copy, ignore_errors=True))
            return outcome

    def _snapshot(self, copy: Path) -> None:
        self.shard.flush()
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.root / self.dirname, copy, copy_function=copy_sparse)

    def _catch_up(self, copy: Path, count: int) -> None:
        """Blocking, while the live shard keeps serving: apply the first ``count`` journalled
        writes to the indexed copy.

        Writes made during a long build (an ingestion that resumed) take a while to apply:
        swaps that replayed 9 and 11 upsert batches of 512 paused searches for 1.1 and 1.9 s
        (41k and 82k points), against 0.75 s with nothing to replay at 100k. Here only the
        writes made during the catch-up itself are left for the swap."""
        if count == 0:
            return
        journal = [operation for _, operation in (self._journal or ())[:count]]
        fresh = EdgeShard.load(str(copy), self._config)
        try:
            apply_writes(fresh, journal)
        finally:
            fresh.close()

    def _swap_in(self, copy: Path, caught_up: int = 0) -> Path:
        """Blocking, with the gate held exclusively: replace the live shard by the indexed copy,
        applying the journalled writes past the ``caught_up`` already in it.

        Returns the retired shard's directory, for the caller to delete once calls resumed.
        """
        live, retired = self.root / self.dirname, self.root / (self.dirname + RETIRED_SUFFIX)
        journal = [operation for _, operation in (self._journal or ())[caught_up:]]
        self.shard.close()
        os.rename(live, retired)
        try:
            os.rename(copy, live)
            fresh = EdgeShard.load(str(live), self._config)
            try:
                apply_writes(fresh, journal)
            except BaseException:
                fresh.close()
                raise
        except BaseException:
            shutil.rmtree(live, ignore_errors=True)
            os.rename(retired, live)
            self.shard = EdgeShard.load(str(live), self._config)
            raise
        self.shard = fresh
        trash = self.root / (TRASH_PREFIX + self.dirname)
        os.rename(retired, trash)  # commit point
        return trash

    # ----- lifecycle -----

    async def close(self) -> None:
        """Stop background work, wait for calls in flight, close the shard; later calls get NotFound."""
        self._closing = True
        tasks = [task for task in (self._scheduler, self._optimizing) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with self._gate.exclusive():
            if self._gate.closed:
                return
            self._gate.closed = True
            await self._run(self.shard.close)


_BLOCK = 1 << 20
_ZEROS = bytes(_BLOCK)


def copy_sparse(src: str, dst: str) -> str:
    """Copy a file, leaving runs of zeros as holes (and its times, as ``copy2`` does).

    The engine preallocates its write-ahead log in 32 MB segments that are mostly holes; a
    plain copy writes them out as real blocks, which made a build's copy of a 10k-point shard
    (about 60 MB on disk) take over 120 MB."""
    with open(src, "rb") as source, open(dst, "wb") as target:
        while block := source.read(_BLOCK):
            if block == _ZEROS[: len(block)]:
                target.seek(len(block), os.SEEK_CUR)
            else:
                target.write(block)
        target.truncate()
    shutil.copystat(src, dst)
    return dst


def apply_writes(shard: EdgeShard, operations: Sequence[UpdateOperation]) -> None:
    """Replay journalled writes in order and make them durable."""
    for operation in operations:
        shard.update(operation)
    shard.flush()
