"""One knowledge base as a Qdrant Edge shard: on-disk layout, concurrency, index builds.

Layout under ``edge_dir`` (``~`` never appears in collection names, so transient entries can
never collide with a knowledge base)::

    <name>/collection.json      our metadata (dimension, vector name); written before commit
    <name>/shard/               the engine's directory (WAL, segments, edge_config.json)
    <name>/shard.optimizing~    transient: copy being indexed by the optimizer child process
    <name>/shard.retired~       transient: the previous shard while a swap is in progress
    <name>/~trash               transient: a retired shard being deleted
    ~staging-<hex>/             transient: a collection being created (renamed into place)

Why index builds copy and swap: the engine's ``optimize()`` holds the GIL for its whole run
(seconds at 10k x 384-d, minutes beyond), which would freeze the event loop and every RPC,
health checks included. So the build runs on a copy in a child process while the live shard
keeps serving reads and writes; every write made meanwhile is journalled. Once the child is
done, the journal so far is applied to the copy while the live shard still serves; the swap
then pauses calls for a moment (close, rename, load the indexed copy, apply the writes made
since), and replaying is safe because writes are idempotent (upserts by id, deletes by filter).
Renaming ``shard.retired~`` to ``~trash`` is the commit point: a crash before it leaves the
retired shard authoritative and :func:`recover` restores it.

The engine allows one opener per shard directory (WAL lock), so one :class:`EdgeCollection`
owns the shard; a gate lets many calls share it and gives close and swap exclusive use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
    FieldCondition,
    Filter,
    Fusion,
    IsEmptyCondition,
    MatchAny,
    MatchValue,
    Modifier,
    PayloadSchemaType,
    Point,
    Prefetch,
    Query,
    QueryRequest,
    SearchParams,
    UpdateOperation,
)
from qdrant_edge import SparseVector as EdgeSparseVector

from services.common.errors import NotFound
from services.retrieve import scores
from services.retrieve.domain import (
    ACL,
    DENSE,
    FILE_NAME,
    FUSION_RRF,
    METADATA,
    MODE_DENSE,
    MODE_SPARSE,
    Hit,
    PointRecord,
    SearchQuery,
    check_dimension,
    dense_fallback,
)
from services.retrieve.metrics import OPTIMIZE_RUNS, OPTIMIZE_SECONDS
from services.retrieve.sparse import SPARSE

if TYPE_CHECKING:
    from qdrant_edge import ConditionType

    from services.retrieve.config import RetrieveSettings

log = logging.getLogger("zhiku.retrieve.edge")

T = TypeVar("T")

META_FILE = "collection.json"
SHARD_DIR = "shard"
OPTIMIZING_DIR = "shard.optimizing~"
RETIRED_DIR = "shard.retired~"
TRASH_DIR = "~trash"
STAGING_PREFIX = "~staging-"
# 2: collection.json names the sparse vector ("sparse"); format-1 collections are dense only.
META_FORMAT = 2
# The engine's default indexing threshold: optimize() indexes a segment only once its dense
# vectors fill this many KB (measured: 3,000 x 512-d points left unindexed, 6,000 indexed).
ENGINE_INDEXING_THRESHOLD_KB = 10_000


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
    hybrid_candidates: int = 50

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
            hybrid_candidates=settings.hybrid_candidates,
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


def edge_config(dimension: int, options: ShardOptions, sparse: bool = True) -> EdgeConfig:
    optimizers = (
        EdgeOptimizersConfig(indexing_threshold=options.indexing_threshold_kb)
        if options.indexing_threshold_kb is not None
        else None
    )
    return EdgeConfig(
        vectors={DENSE: EdgeVectorParams(size=dimension, distance=Distance.Cosine)},
        # The engine weights sparse terms by IDF over the live collection (BM25, see sparse.py).
        sparse_vectors={SPARSE: EdgeSparseVectorParams(modifier=Modifier.Idf)} if sparse else None,
        optimizers=optimizers,
        max_search_threads=options.search_threads,
    )


def is_collection(root: Path) -> bool:
    return (root / META_FILE).is_file()


def read_meta(root: Path) -> tuple[int, bool]:
    """(dimension, has a sparse vector) from our metadata file."""
    meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    return int(meta["dimension"]), meta.get("sparse") == SPARSE


def recover(root: Path) -> None:
    """Finish or undo an interrupted swap or build (see the module docstring)."""
    live, retired = root / SHARD_DIR, root / RETIRED_DIR
    if retired.exists():
        if live.exists():
            shutil.rmtree(live)
        os.rename(retired, live)
        log.warning("restored %s after an interrupted index swap", root.name)
    for leftover in (root / OPTIMIZING_DIR, root / TRASH_DIR):
        if leftover.exists():
            shutil.rmtree(leftover)


def create_on_disk(root: Path, dimension: int, options: ShardOptions, sparse: bool = True) -> None:
    """Build the collection in a staging directory and rename it into place (atomic commit).

    ``sparse=False`` makes the dense-only layout of format 1 (tests of old collections)."""
    staging = root.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        shard = EdgeShard.create(str(staging / SHARD_DIR), edge_config(dimension, options, sparse))
        try:
            shard.update(UpdateOperation.create_field_index(FILE_NAME, PayloadSchemaType.Keyword))
            shard.update(UpdateOperation.create_field_index(ACL, PayloadSchemaType.Keyword))
            shard.flush()
        finally:
            shard.close()
        meta = {
            "format": META_FORMAT,
            "dimension": dimension,
            "vector": DENSE,
            "distance": "cosine",
        }
        if sparse:
            meta["sparse"] = SPARSE
        else:
            meta["format"] = 1
        (staging / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class EdgeCollection:
    """An open shard plus the locks and the background index build that go with it."""

    def __init__(
        self,
        name: str,
        root: Path,
        executor: Executor,
        options: ShardOptions,
        optimize_slots: asyncio.Semaphore,
    ) -> None:
        self.name = name
        self.root = root
        self.dimension, self.sparse = read_meta(root)
        if not self.sparse:
            log.warning(
                "collection %s was created without a sparse vector: it searches dense only "
                "(re-create it to get sparse and hybrid search)",
                name,
            )
        self._executor = executor
        self._options = options
        self._optimize_slots = optimize_slots
        self._gate = Gate()
        # Serialises writes so the journal order is the order they hit the live shard.
        self._write_lock = asyncio.Lock()
        self._journal: list[UpdateOperation] | None = None
        self._last_write = 0.0
        self._scheduler: asyncio.Task[None] | None = None
        self._optimizing: asyncio.Task[str] | None = None
        # The last swapped-in build's report (points, timings, writes replayed), for logs and tests.
        self.last_build: dict[str, Any] = {}
        self._closing = False
        self._search_params = SearchParams(hnsw_ef=options.hnsw_ef) if options.hnsw_ef else None
        self.shard: EdgeShard = EdgeShard.load(str(root / SHARD_DIR), self._config())
        if ACL not in self.shard.info().payload_schema:  # made before access lists existed
            self.shard.update(UpdateOperation.create_field_index(ACL, PayloadSchemaType.Keyword))

    @classmethod
    def open(
        cls,
        name: str,
        root: Path,
        executor: Executor,
        options: ShardOptions,
        optimize_slots: asyncio.Semaphore,
    ) -> EdgeCollection:
        """Blocking: recover from an interrupted swap, then load the shard."""
        recover(root)
        return cls(name, root, executor, options, optimize_slots)

    def _config(self) -> EdgeConfig:
        return edge_config(self.dimension, self._options, self.sparse)

    def _gone(self) -> Exception:
        return NotFound(f"collection {self.name!r} not found")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await run_blocking(self._executor, fn)

    # ----- reads -----

    async def search(self, query: SearchQuery) -> list[Hit]:
        if not self.sparse and query.mode != MODE_DENSE:
            query = dense_fallback(self.name, query)
        if query.mode != MODE_SPARSE:
            check_dimension(self.name, self.dimension, len(query.vector), "query")
        if query.mode != MODE_DENSE and not query.sparse:
            if query.mode == MODE_SPARSE:
                return []  # no words in the query text: nothing can match lexically
            query = query.without_sparse()
        request = self._request(query)
        async with self._gate.shared(self._gone):
            found = await self._run(lambda: self.shard.query(request))
        hits = [
            Hit.from_payload(
                p.id,
                scores.map_score(query.mode, p.score, query.fusion),
                p.payload,
                scores.hit_dense_score(query, p.score, p.vector),
            )
            for p in found
        ]
        return scores.rank_and_keep(hits, query.score_threshold)

    def _request(self, query: SearchQuery) -> QueryRequest:
        query_filter = _filter(query)
        if query.mode == MODE_DENSE:
            return QueryRequest(
                limit=query.top_k,
                query=Query.Nearest(query.vector, using=DENSE),
                filter=query_filter,
                score_threshold=scores.cosine_floor(query.score_threshold),
                params=self._search_params,
                with_payload=True,
            )
        sparse = Query.Nearest(EdgeSparseVector(query.sparse.indices, query.sparse.values), using=SPARSE)
        if query.mode == MODE_SPARSE:
            return QueryRequest(limit=query.top_k, query=sparse, filter=query_filter, with_payload=True)
        candidates = max(query.top_k, self._options.hybrid_candidates)
        return QueryRequest(
            limit=query.top_k,
            prefetches=[
                Prefetch(
                    limit=candidates,
                    query=Query.Nearest(query.vector, using=DENSE),
                    filter=query_filter,
                    params=self._search_params,
                ),
                Prefetch(limit=candidates, query=sparse, filter=query_filter),
            ],
            # qdrant_edge's stubs name the Fusion class where its Rrf and Dbsf variants are meant.
            query=Fusion.Rrf(k=scores.RRF_K) if query.fusion == FUSION_RRF else Fusion.Dbsf(),  # type: ignore[arg-type]
            filter=query_filter,
            with_payload=True,
            with_vector=[DENSE],  # for each hit's dense_score (scores.py)
        )

    async def count(self) -> int:
        async with self._gate.shared(self._gone):
            return await self._run(lambda: self.shard.count(CountRequest(exact=True)))

    async def info(self) -> tuple[int, int]:
        """(points, indexed vectors) as the engine reports them."""
        async with self._gate.shared(self._gone):
            info = await self._run(self.shard.info)
        return info.points_count, info.indexed_vectors_count

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
        """Enough unindexed points for a build: 20k before the first index, then a tail
        that fills the engine's indexing threshold (:meth:`ShardOptions.tail_to_build`)."""
        indexed, unindexed = await self.index_state()
        if indexed == 0:
            return unindexed >= self._options.optimize_min_unindexed
        return unindexed >= self._options.tail_to_build(self.dimension)

    # ----- writes -----

    async def upsert(self, points: list[PointRecord]) -> int:
        for point in points:
            check_dimension(self.name, self.dimension, len(point.vector), f"point {point.id}")
        if not points:
            return 0

        def vectors(point: PointRecord) -> dict[str, Any]:
            if self.sparse and point.sparse:
                sparse = EdgeSparseVector(point.sparse.indices, point.sparse.values)
                return {DENSE: point.vector, SPARSE: sparse}
            return {DENSE: point.vector}

        def build() -> UpdateOperation:
            engine_points = [Point(p.id, vectors(p), p.payload()) for p in points]
            return UpdateOperation.upsert_points(engine_points)

        await self._write(build)
        return len(points)

    async def delete_by_file(
        self, file_name: str, keep: tuple[tuple[str, str], ...] = (), only: tuple[tuple[str, str], ...] = ()
    ) -> int:
        kept: list[ConditionType] = [
            FieldCondition(key=f"{METADATA}.{key}", match=MatchValue(value)) for key, value in keep
        ]
        selector = Filter(
            must=[
                FieldCondition(key=FILE_NAME, match=MatchValue(file_name)),
                *(FieldCondition(key=f"{METADATA}.{key}", match=MatchValue(value)) for key, value in only),
            ],
            must_not=kept or None,
        )
        async with self._write_lock, self._gate.shared(self._gone):
            matching = await self._run(lambda: self.shard.count(CountRequest(exact=True, filter=selector)))
            if matching:
                await self._apply(lambda: UpdateOperation.delete_points_by_filter(selector))
        if matching:
            self._written()
        return matching

    async def set_file_acl(self, file_name: str, acl: tuple[str, ...]) -> int:
        """Replace the acl payload of the file's points (every generation); journalled like
        any write, so a build in progress keeps it."""
        selector = Filter(must=[FieldCondition(key=FILE_NAME, match=MatchValue(file_name))])
        async with self._write_lock, self._gate.shared(self._gone):
            matching = await self._run(lambda: self.shard.count(CountRequest(exact=True, filter=selector)))
            if matching:
                await self._apply(lambda: UpdateOperation.set_payload_by_filter(selector, {ACL: list(acl)}))
        if matching:
            self._written()
        return matching

    async def _write(self, build: Callable[[], UpdateOperation]) -> None:
        async with self._write_lock, self._gate.shared(self._gone):
            await self._apply(build)
        self._written()

    async def _apply(self, build: Callable[[], UpdateOperation]) -> None:
        """Apply to the live shard and, while an index build works on a copy, journal it.

        Both happen in the worker thread: a caller cancelled mid-call (deadline) must not
        leave an applied write out of the journal. The write lock is held until the thread
        returns (see run_blocking), so the journal cannot change hands meanwhile.
        """

        def apply() -> None:
            operation = build()
            self.shard.update(operation)
            journal = self._journal
            if journal is not None:
                journal.append(operation)

        await self._run(apply)

    # ----- index builds -----

    def _written(self) -> None:
        self._last_write = time.monotonic()
        if self._options.optimize_delay_s <= 0 or self._closing:
            return
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.create_task(self._optimize_when_settled(), name=f"settle-{self.name}")

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

    async def optimize(self, before_swap: Callable[[], Awaitable[None]] | None = None) -> str:
        """Build the index now (joining a build in progress); returns the outcome.

        Outcomes: ``optimized`` (swapped in), ``unchanged`` (engine had nothing to do),
        ``failed`` (logged; the live shard is untouched). ``before_swap`` runs after the
        child finished and before the swap: tests use it to write while the copy is stale.
        """
        if self._optimizing is None or self._optimizing.done():
            self._optimizing = asyncio.create_task(self._optimize(before_swap), name=f"optimize-{self.name}")
        return await asyncio.shield(self._optimizing)

    async def _optimize(self, before_swap: Callable[[], Awaitable[None]] | None) -> str:
        copy = self.root / OPTIMIZING_DIR
        async with self._optimize_slots:
            started = time.perf_counter()
            outcome = "failed"
            try:
                async with self._write_lock:
                    async with self._gate.shared(self._gone):
                        await self._run(lambda: self._snapshot(copy))
                    self._journal = []
                report = await self._run_child(copy)
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
                    log.info("index of %s built", self.name, extra={"fields": fields})
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
        shutil.copytree(self.root / SHARD_DIR, copy)

    async def _run_child(self, copy: Path) -> dict[str, Any]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.retrieve.backends.edge_optimize",
            "--nice",
            str(self._options.optimize_nice),
            "--parent-pid",
            str(os.getpid()),
            str(copy),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self._options.optimize_timeout_s)
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

    def _catch_up(self, copy: Path, count: int) -> None:
        """Blocking, while the live shard keeps serving: apply the first ``count`` journalled
        writes to the indexed copy.

        Writes made during a long build (an ingestion that resumed) take a while to apply:
        swaps that replayed 9 and 11 upsert batches of 512 paused searches for 1.1 and 1.9 s
        (41k and 82k points), against 0.75 s with nothing to replay at 100k. Here only the
        writes made during the catch-up itself are left for the swap."""
        if count == 0:
            return
        journal = list(self._journal or ())[:count]
        fresh = EdgeShard.load(str(copy), self._config())
        try:
            _apply_writes(fresh, journal)
        finally:
            fresh.close()

    def _swap_in(self, copy: Path, caught_up: int = 0) -> Path:
        """Blocking, with the gate held exclusively: replace the live shard by the indexed copy,
        applying the journalled writes past the ``caught_up`` already in it.

        Returns the retired shard's directory, for the caller to delete once calls resumed.
        """
        live, retired = self.root / SHARD_DIR, self.root / RETIRED_DIR
        journal = list(self._journal or ())[caught_up:]
        self.shard.close()
        os.rename(live, retired)
        try:
            os.rename(copy, live)
            fresh = EdgeShard.load(str(live), self._config())
            try:
                _apply_writes(fresh, journal)
            except BaseException:
                fresh.close()
                raise
        except BaseException:
            shutil.rmtree(live, ignore_errors=True)
            os.rename(retired, live)
            self.shard = EdgeShard.load(str(live), self._config())
            raise
        self.shard = fresh
        trash = self.root / TRASH_DIR
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


def _apply_writes(shard: EdgeShard, operations: list[UpdateOperation]) -> None:
    """Replay journalled writes in order and make them durable."""
    for operation in operations:
        shard.update(operation)
    shard.flush()


def _filter(query: SearchQuery) -> Filter | None:
    """File names (any of), metadata fields (all of) and the reader's access, as one engine
    filter. A point without acl (indexed before access lists existed) stays open."""
    must: list[ConditionType] = []
    if query.reader_acl is not None:
        must.append(
            Filter(
                should=[
                    FieldCondition(key=ACL, match=MatchAny(any=list(query.reader_acl))),
                    IsEmptyCondition(key=ACL),
                ]
            )
        )
    if query.file_names:
        must.append(FieldCondition(key=FILE_NAME, match=MatchAny(any=list(query.file_names))))
    for key, value in query.metadata_filter:
        must.append(FieldCondition(key=f"{METADATA}.{key}", match=MatchValue(value)))
    return Filter(must=must) if must else None
