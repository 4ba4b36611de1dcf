"""A knowledge base on the edge backend: several engine shards searched and written as one.

Layout of ``edge_dir/<name>/`` (``~`` never appears in collection names)::

    collection.json            our metadata (dimension, vectors, format); written before commit
    shard/                     the first shard (the only one of collections made before sharding)
    shard-1/, shard-2/, ...    later shards; the highest-numbered one is the write shard
    shard-N.terms.npz          saved sparse-term statistics of a sealed shard (edge_terms.py)
    ~new-<hex>/                transient: a shard being created (renamed into place)

plus each shard's transient build entries (:mod:`.edge_shard`); ``edge_dir/~staging-<hex>/``
is a collection being created.

Why shards: an index build runs on a copy of the shard it indexes (see :mod:`.edge_shard`),
and with one shard per knowledge base every build copied the whole knowledge base (634 MB at
100k points; about 6 GB for every few thousand new points at 1M). Now new points go to the
write shard; once it holds ``max(edge_shard_points, edge_shard_growth x points of the sealed
shards)`` it is sealed: a new, empty write shard is created (its rename into place commits
the seal) and the sealed shard is built once in the background, from then on only read and
deleted from. A build copies one shard: with the defaults at most about a tenth of the
knowledge base (its peak extra disk is about 1.5 times that, copy plus new segments), and the
number of shards grows with the logarithm of the size (about 11 at 100k points, 34 at 1M).

Exact across shards:

* A point id lives in one shard. An upsert of an id a sealed shard holds writes it to the
  write shard, then deletes it from the sealed one; a search that sees both meanwhile keeps
  the newer, and a crash between the two is repaired at open (ids of the write shard are
  removed from the sealed shards).
* ``delete_by_file`` and ``set_file_acl`` run over every shard while searches wait (the view
  gate), so a reader sees a re-uploaded file's generations swapped all at once. Counts are
  sums over shards.
* A search asks every shard for its dense and its sparse candidates, merges each kind by
  score (cosine, and BM25 with the global IDF of :mod:`.edge_terms`), then fuses the two
  merged lists (:mod:`.edge_fusion`): the same hits and scores as one shard would give.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from qdrant_edge import (
    CountRequest,
    EdgeShard,
    FieldCondition,
    Filter,
    IsEmptyCondition,
    MatchAny,
    MatchValue,
    Point,
    QuantizationSearchParams,
    Query,
    QueryBatchRequest,
    QueryRequest,
    ScrollRequest,
    SearchParams,
    UpdateOperation,
)
from qdrant_edge import SparseVector as EdgeSparseVector

from services.common.errors import NotFound
from services.common.sparse import SPARSE
from services.retrieve import scores
from services.retrieve.backends.edge_fusion import dbsf, rrf
from services.retrieve.backends.edge_merge import (
    MERGE_PREFIX,
    MergeRecord,
    copy_page,
    plan,
    recover_merge,
    roll_forward,
)
from services.retrieve.backends.edge_priority import SearchFirst
from services.retrieve.backends.edge_shard import (
    SHARD_DIR,
    Apply,
    Gate,
    ShardOptions,
    ShardUnit,
    apply_writes,
    create_shard,
    edge_config,
    recover,
    run_blocking,
    run_optimizer,
    run_to_completion,
)
from services.retrieve.backends.edge_terms import TermStats, query_weights
from services.retrieve.domain import (
    ACL,
    DENSE,
    FILE_NAME,
    FUSION_RRF,
    METADATA,
    MODE_DENSE,
    MODE_HYBRID,
    MODE_SPARSE,
    Hit,
    PointRecord,
    SearchQuery,
    check_dimension,
    dense_fallback,
)

if TYPE_CHECKING:
    from qdrant_edge import ConditionType, PointId, Record

log = logging.getLogger("zhiku.retrieve.edge")

# Candidates of one kind: point id -> (shard position, engine score).
Found = dict["PointId", tuple[int, float]]

T = TypeVar("T")

META_FILE = "collection.json"
STAGING_PREFIX = "~staging-"
NEW_SHARD_PREFIX = "~new-"
TERMS_SUFFIX = ".terms.npz"
# 3: every shard stores plain sparse weights, IDF comes with the query (edge_terms.py);
# 2: the first shard applies the engine's IDF; 1: dense only.
META_FORMAT = 3
_SHARD_NAME = re.compile(r"shard(?:-([1-9][0-9]*))?")
_SCAN_PAGE = 2048
# Points per engine write. An engine call holds the GIL until it returns, so searches wait
# for a whole write: 12-16 ms for 512 points of 384-d with text; slices of 64 leave a search
# waiting about 2 ms (a crash between slices leaves part of an unacknowledged batch, which
# its retry overwrites, ids being the chunks').
WRITE_SLICE = 64


def shard_dirname(index: int) -> str:
    return SHARD_DIR if index == 0 else f"{SHARD_DIR}-{index}"


def shard_indexes(root: Path) -> list[int]:
    """Indexes of the shards present, oldest first."""
    found = []
    for entry in root.iterdir():
        match = _SHARD_NAME.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append(int(match.group(1) or 0))
    return sorted(found)


def is_collection(root: Path) -> bool:
    return (root / META_FILE).is_file()


def read_meta(root: Path) -> tuple[int, bool, int]:
    """(dimension, has a sparse vector, format) from our metadata file."""
    meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    return int(meta["dimension"]), meta.get("sparse") == SPARSE, int(meta.get("format", 1))


def create_on_disk(
    root: Path, dimension: int, options: ShardOptions, sparse: bool = True, meta_format: int = META_FORMAT
) -> None:
    """Build the collection in a staging directory and rename it into place (atomic commit).

    ``sparse=False`` makes the dense-only layout of format 1 and ``meta_format=2`` the
    engine-IDF layout of format 2 (tests of old collections)."""
    staging = root.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        fmt = meta_format if sparse else 1
        create_shard(staging / SHARD_DIR, edge_config(dimension, options, sparse, engine_idf=fmt == 2))
        meta: dict[str, Any] = {"format": fmt, "dimension": dimension, "vector": DENSE, "distance": "cosine"}
        if sparse:
            meta["sparse"] = SPARSE
        (staging / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _sparse_of(record: Any) -> list[int] | None:
    vectors = record.vector
    if not isinstance(vectors, dict):
        return None
    sparse = vectors.get(SPARSE)
    return list(sparse.indices) if sparse is not None else None


def _scan(shard: EdgeShard, selector: Filter | None, sparse: bool) -> list[tuple[str, list[int] | None]]:
    """Blocking: (id, sparse term ids) of every point matching ``selector``."""
    found: list[tuple[str, list[int] | None]] = []
    offset = None
    while True:
        records, offset = shard.scroll(
            ScrollRequest(
                offset=offset,
                limit=_SCAN_PAGE,
                filter=selector,
                with_payload=False,
                with_vector=[SPARSE] if sparse else False,
            )
        )
        found.extend((str(record.id), _sparse_of(record) if sparse else None) for record in records)
        if offset is None:
            return found


class EdgeCollection:
    """The shards of one knowledge base, oldest first; the last one takes new points."""

    def __init__(
        self,
        name: str,
        root: Path,
        executor: Executor,
        options: ShardOptions,
        optimize_slots: asyncio.Semaphore,
        search_first: SearchFirst,
    ) -> None:
        self.name = name
        self.root = root
        self.dimension, self.sparse, self.format = read_meta(root)
        if not self.sparse:
            log.warning(
                "collection %s was created without a sparse vector: it searches dense only "
                "(re-create it to get sparse and hybrid search)",
                name,
            )
        self._executor = executor
        self._options = options
        self._optimize_slots = optimize_slots
        self._search_first = search_first
        self._search_params = (
            SearchParams(
                hnsw_ef=options.hnsw_ef,
                quantization=(
                    QuantizationSearchParams(rescore=True, oversampling=options.quantization_oversampling)
                    if options.quantization
                    else None
                ),
            )
            if options.hnsw_ef or options.quantization
            else None
        )
        # Searches and counts share it; writes spanning shards take it so readers see them whole.
        self._view = Gate()
        # Serialises the collection's writes: routing of ids, term statistics, sealing.
        self._write_lock = asyncio.Lock()
        self.units: list[ShardUnit] = []
        self.indexes: list[int] = []
        # Background merging of small sealed shards (edge_merge.py).
        self._merger: asyncio.Task[None] | None = None
        self._merge_wanted = False

    # ----- opening -----

    @classmethod
    def open(
        cls,
        name: str,
        root: Path,
        executor: Executor,
        options: ShardOptions,
        optimize_slots: asyncio.Semaphore,
        search_first: SearchFirst,
    ) -> EdgeCollection:
        """Blocking: recover interrupted merges, swaps and seals, open every shard, load or
        rebuild the term statistics and remove ids a crash left in two shards."""
        recover_merge(root, TERMS_SUFFIX)
        recover(root)
        for entry in root.iterdir():
            if entry.name.startswith(NEW_SHARD_PREFIX) or entry.name.endswith(TERMS_SUFFIX + ".partial"):
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
        collection = cls(name, root, executor, options, optimize_slots, search_first)
        try:
            for index in shard_indexes(root):
                collection._attach(index)
            for unit in collection.units[:-1]:
                unit.sealed = True
            collection._load_terms()
        except BaseException:
            for unit in collection.units:
                unit.shard.close()
            raise
        return collection

    def _attach(self, index: int) -> ShardUnit:
        unit = self._open_unit(index)
        self.units = [*self.units, unit]
        self.indexes = [*self.indexes, index]
        return unit

    def _open_unit(self, index: int) -> ShardUnit:
        """Blocking: open the shard directory of ``index``."""
        engine_idf = self.sparse and self.format == 2 and index == 0
        unit = ShardUnit(
            self.name,
            self.root,
            shard_dirname(index),
            edge_config(self.dimension, self._options, self.sparse, engine_idf),
            self._executor,
            self._options,
            self._optimize_slots,
            dimension=self.dimension,
            sparse=self.sparse,
            engine_idf=engine_idf,
        )
        unit.on_settled = self.want_merge
        return unit

    def _terms_path(self, unit: ShardUnit) -> Path:
        return self.root / (unit.dirname + TERMS_SUFFIX)

    def _load_terms(self) -> None:
        """Blocking, at open: saved statistics of sealed shards whose count still matches,
        else a scan; the write shard is always scanned, and its ids are removed from the
        sealed shards (an override interrupted between its two writes)."""
        write = self.units[-1]
        written = _scan(write.shard, None, self.sparse)
        for unit in self.units[:-1]:
            points = unit.shard.count(CountRequest(exact=True))
            saved = TermStats.load(self._terms_path(unit), points) if self.sparse else None
            if saved is not None:
                unit.terms = saved
            else:
                for _, indices in _scan(unit.shard, None, self.sparse):
                    if indices is not None:
                        unit.terms.add(indices)
            ids = [point_id for point_id, _ in written]
            stale = [
                _sparse_records(unit.shard, ids[i : i + _SCAN_PAGE], self.sparse)
                for i in range(0, len(ids), _SCAN_PAGE)
            ]
            duplicates = [item for page in stale for item in page]
            if duplicates:
                unit.shard.update(
                    UpdateOperation.delete_points(cast("list[PointId]", [p for p, _ in duplicates]))
                )
                for _, indices in duplicates:
                    if indices is not None:
                        unit.terms.remove(indices)
                unit.shard.flush()
                log.warning(
                    "removed %d points of %s left in two shards by a crash", len(duplicates), self.name
                )
            if self.sparse and (saved is None or duplicates):
                unit.terms.save(self._terms_path(unit), unit.shard.count(CountRequest(exact=True)))
        for _, indices in written:
            if indices is not None:
                write.terms.add(indices)

    # ----- helpers -----

    def _gone(self) -> Exception:
        return NotFound(f"collection {self.name!r} not found")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await run_blocking(self._executor, fn)

    @asynccontextmanager
    async def _all_shards(self) -> AsyncIterator[list[tuple[ShardUnit, EdgeShard]]]:
        """Every shard held for shared use, oldest first."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._view.shared(self._gone))
            units = self.units
            shards = [await stack.enter_async_context(unit.reading()) for unit in units]
            yield list(zip(units, shards, strict=True))

    # ----- reads -----

    async def count(self) -> int:
        async with self._all_shards() as held:
            return await self._run(lambda: sum(shard.count(CountRequest(exact=True)) for _, shard in held))

    async def search(self, query: SearchQuery) -> list[Hit]:
        if not self.sparse and query.mode != MODE_DENSE:
            query = dense_fallback(self.name, query)
        if query.mode != MODE_SPARSE:
            check_dimension(self.name, self.dimension, len(query.vector), "query")
        if query.mode != MODE_DENSE and not query.sparse:
            if query.mode == MODE_SPARSE:
                return []  # no words in the query text: nothing can match lexically
            query = query.without_sparse()
        selector = _filter(query)
        with self._search_first.searching():
            async with self._all_shards() as held:
                hits = await self._run(lambda: self._search(held, query, selector))
        return scores.rank_and_keep(hits, query.score_threshold)

    def _search(
        self, held: list[tuple[ShardUnit, EdgeShard]], query: SearchQuery, selector: Filter | None
    ) -> list[Hit]:
        """Blocking: candidates of every shard, merged, fused, then their payloads."""
        sparse = query.mode != MODE_DENSE
        limit = (
            max(query.top_k, self._options.hybrid_candidates) if query.mode == MODE_HYBRID else query.top_k
        )
        weights = (
            query_weights(
                query.sparse.indices,
                query.sparse.values,
                [unit.terms for unit, _ in held],
                [unit.engine_idf for unit, _ in held],
            )
            if sparse
            else []
        )
        dense_found, sparse_found = self._candidates(held, query, selector, limit, weights)
        dense_list = _best(dense_found, limit)
        sparse_list = _best(sparse_found, limit)
        if query.mode == MODE_DENSE:
            chosen = dense_list[: query.top_k]
        elif query.mode == MODE_SPARSE:
            chosen = sparse_list[: query.top_k]
        else:
            fuse = rrf if query.fusion == FUSION_RRF else dbsf
            fused = fuse([dense_list, sparse_list])
            chosen = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[: query.top_k]
        where = {**{k: v[0] for k, v in sparse_found.items()}, **{k: v[0] for k, v in dense_found.items()}}
        return self._fetch(held, query, chosen, where)

    def _candidates(
        self,
        held: list[tuple[ShardUnit, EdgeShard]],
        query: SearchQuery,
        selector: Filter | None,
        limit: int,
        weights: list[tuple[list[int], list[float]]],
    ) -> tuple[Found, Found]:
        """Blocking: every shard's best ``limit`` dense and sparse candidates that can be in
        the merged best ``limit`` of their kind, as id -> (shard position, engine score).

        Asking each of n shards for ``limit`` candidates costs n x limit result objects (a
        hybrid search over 14 shards met 1,400), most of them far from the merged best. So
        each shard is first asked for a share, about ``2 x limit / n``; a shard is asked
        again for all ``limit`` only when its share was full and its last score beats the
        ``limit``-th best score seen: no candidate it did not return can then beat that
        cut. The result equals asking every shard for ``limit`` except, as within one
        engine search, in which of the candidates tied at the cut are kept. Ties at the cut
        are common (copies of a text share its BM25 score); asking again for them asked
        every shard twice (bench_scale).

        Ids stay the engine's UUID objects (they order like their canonical strings); a
        later shard's copy of an id wins (a newer write, see the module docstring)."""
        dense, sparse = query.mode != MODE_SPARSE, query.mode != MODE_DENSE
        share = limit if len(held) == 1 else min(limit, max(query.top_k, -(-2 * limit // len(held)), 8))
        found: tuple[Found, Found] = ({}, {})
        # per kind: the shards whose share was full, with their last score
        full: tuple[dict[int, float], dict[int, float]] = ({}, {})

        def ask(position: int, shard: EdgeShard, kinds: tuple[bool, bool], size: int) -> None:
            requests: list[QueryRequest] = []
            if kinds[0]:
                requests.append(
                    QueryRequest(
                        limit=size,
                        query=Query.Nearest(query.vector, using=DENSE),
                        filter=selector,
                        score_threshold=(
                            scores.cosine_floor(query.score_threshold) if query.mode == MODE_DENSE else None
                        ),
                        params=self._search_params,
                    )
                )
            if kinds[1]:
                terms, values = weights[position]
                requests.append(
                    QueryRequest(
                        limit=size,
                        query=Query.Nearest(EdgeSparseVector(terms, values), using=SPARSE),
                        filter=selector,
                    )
                )
            results = iter(shard.query_batch(QueryBatchRequest(requests)))
            for kind, wanted in enumerate(kinds):
                if not wanted:
                    continue
                points = next(results)
                into = found[kind]
                for point in points:
                    previous = into.get(point.id)
                    if previous is None or previous[0] <= position:
                        into[point.id] = (position, point.score)
                if len(points) == size < limit:
                    full[kind][position] = points[-1].score

        for position, (_, shard) in enumerate(held):
            kinds = (dense, sparse and bool(weights[position][0]))
            if any(kinds):
                ask(position, shard, kinds, share)
        cuts = [_cut(found[kind], limit) for kind in (0, 1)]
        for position, (_, shard) in enumerate(held):
            again = tuple(position in full[kind] and full[kind][position] > cuts[kind] for kind in (0, 1))
            if any(again):
                ask(position, shard, (again[0], again[1]), limit)
        return found

    def _fetch(
        self,
        held: list[tuple[ShardUnit, EdgeShard]],
        query: SearchQuery,
        chosen: Sequence[tuple[PointId, float]],
        where: dict[PointId, int],
    ) -> list[Hit]:
        """Blocking: payloads (and dense vectors, for dense_score) of the chosen points."""
        by_shard: dict[int, list[PointId]] = {}
        for point_id, _ in chosen:
            by_shard.setdefault(where[point_id], []).append(point_id)
        records: dict[PointId, Record] = {}
        vector = [DENSE] if query.mode != MODE_DENSE else False
        for position, ids in by_shard.items():
            for record in held[position][1].retrieve(ids, True, vector):
                records[record.id] = record
        hits = []
        for point_id, raw in chosen:
            found = records.get(point_id)
            if found is None:  # overwritten or deleted by a write running meanwhile
                continue
            hits.append(
                Hit.from_payload(
                    point_id,
                    scores.map_score(query.mode, raw, query.fusion),
                    found.payload,
                    scores.hit_dense_score(query, raw, found.vector),
                )
            )
        return hits

    # ----- writes -----

    async def upsert(self, points: list[PointRecord]) -> int:
        for point in points:
            check_dimension(self.name, self.dimension, len(point.vector), f"point {point.id}")
        if not points:
            return 0
        ids = [point.id for point in points]

        def vectors(point: PointRecord) -> dict[str, Any]:
            if self.sparse and point.sparse:
                return {
                    DENSE: point.vector,
                    SPARSE: EdgeSparseVector(point.sparse.indices, point.sparse.values),
                }
            return {DENSE: point.vector}

        async with self._write_lock:
            async with self._all_shards() as held:
                previous, sealed_points = await self._run(
                    lambda: (
                        [_sparse_records(shard, ids, self.sparse) for _, shard in held],
                        sum(shard.count(CountRequest(exact=True)) for _, shard in held[:-1]),
                    )
                )
            units = self.units
            write = units[-1]

            def put(shard: EdgeShard, apply: Apply) -> int:
                for start in range(0, len(points), WRITE_SLICE):
                    self._search_first.before_write()
                    batch = points[start : start + WRITE_SLICE]
                    apply(
                        UpdateOperation.upsert_points([Point(p.id, vectors(p), p.payload()) for p in batch])
                    )
                if self.sparse:
                    for _, indices in previous[len(units) - 1]:
                        if indices is not None:
                            write.terms.remove(indices)
                    for point in points:
                        if point.sparse:
                            write.terms.add(point.sparse.indices)
                return int(shard.count(CountRequest(exact=True)))

            async def write_all() -> None:
                held_by_write = await write.mutate(put)
                for unit, stale in zip(units[:-1], previous, strict=False):
                    if stale:
                        await unit.mutate(self._dropper(unit, stale))
                if held_by_write >= max(
                    self._options.shard_points, self._options.shard_growth * sealed_points
                ):
                    await self._seal()

            # A caller that goes away (a client's deadline or disconnect) must not stop the
            # writes half-way: an override written but not dropped from its old shard, or a
            # seal whose new shard exists on disk but not here (the next seal then collided
            # with it: found by bench_scale, whose writers are killed mid-call).
            await run_to_completion(write_all())
        return len(points)

    def _dropper(
        self, unit: ShardUnit, stale: list[tuple[str, list[int] | None]]
    ) -> Callable[[EdgeShard, Apply], None]:
        """Blocking: remove overridden points from a sealed shard and from its statistics."""

        def drop(shard: EdgeShard, apply: Apply) -> None:
            apply(UpdateOperation.delete_points(cast("list[PointId]", [point_id for point_id, _ in stale])))
            for _, indices in stale:
                if indices is not None:
                    unit.terms.remove(indices)
            self._save_terms(unit, shard)

        return drop

    def _save_terms(self, unit: ShardUnit, shard: EdgeShard) -> None:
        if self.sparse and unit.sealed:
            unit.terms.save(self._terms_path(unit), shard.count(CountRequest(exact=True)))

    async def _seal(self) -> None:
        """Seal the write shard: commit a new empty one, save the old one's statistics and
        build its index in the background. Caller holds the write lock."""
        index = self.indexes[-1] + 1
        dirname = shard_dirname(index)
        sparse = self.sparse
        config = edge_config(self.dimension, self._options, sparse, engine_idf=False)

        def create() -> None:
            staging = self.root / f"{NEW_SHARD_PREFIX}{uuid.uuid4().hex}"
            try:
                create_shard(staging, config)
                os.rename(staging, self.root / dirname)  # the commit point of the seal
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

        await self._run(create)
        old = self.units[-1]
        old.sealed = True
        await self._run(lambda: self._attach(index))
        await old.mutate(lambda shard, _apply: self._save_terms(old, shard))
        old.schedule_build()
        self.want_merge()
        log.info(
            "sealed shard %s of %s",
            old.dirname,
            self.name,
            extra={"fields": {"points": old.terms.docs, "shards": len(self.units)}},
        )

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

        def delete(unit: ShardUnit, shard: EdgeShard, apply: Apply) -> int:
            matching = _scan(shard, selector, self.sparse)
            if matching:
                apply(UpdateOperation.delete_points_by_filter(selector))
                for _, indices in matching:
                    if indices is not None:
                        unit.terms.remove(indices)
                self._save_terms(unit, shard)
            return len(matching)

        return await self._each_shard(delete)

    async def set_file_acl(self, file_name: str, acl: tuple[str, ...]) -> int:
        """Replace the acl payload of the file's points (every generation, every shard);
        journalled like any write, so a build in progress keeps it."""
        selector = Filter(must=[FieldCondition(key=FILE_NAME, match=MatchValue(file_name))])

        def set_acl(_unit: ShardUnit, shard: EdgeShard, apply: Apply) -> int:
            matching = int(shard.count(CountRequest(exact=True, filter=selector)))
            if matching:
                apply(UpdateOperation.set_payload_by_filter(selector, {ACL: list(acl)}))
            return matching

        return await self._each_shard(set_acl)

    async def _each_shard(self, change: Callable[[ShardUnit, EdgeShard, Apply], int]) -> int:
        """Apply ``change`` to every shard while searches wait, so they see it whole (and all
        of it, even when the caller goes away half-way)."""
        async with self._write_lock, self._view.exclusive():
            if self._view.closed:
                raise self._gone()

            async def every_shard() -> int:
                total = 0
                for unit in self.units:
                    total += await unit.mutate(functools.partial(change, unit))
                return total

            return await run_to_completion(every_shard())

    # ----- index builds -----

    async def optimize(self, before_swap: Callable[[], Awaitable[None]] | None = None) -> str:
        """Build every shard that has unindexed points now; ``optimized`` when any was
        swapped in, ``failed`` when any failed, else ``unchanged``."""
        outcomes = [await unit.optimize(before_swap) for unit in self.units]
        for outcome in ("failed", "optimized"):
            if outcome in outcomes:
                return outcome
        return "unchanged"

    @property
    def building(self) -> bool:
        """An index build or a merge is pending or running."""
        return self.merging or any(unit.building for unit in self.units)

    @property
    def merging(self) -> bool:
        return self._merger is not None and not self._merger.done()

    # ----- merging sealed shards (edge_merge.py) -----

    def want_merge(self) -> None:
        """Look for shards to merge (after a seal, and whenever a build has settled)."""
        if self._options.merge_fraction <= 0 or self._view.closed:
            return
        self._merge_wanted = True
        if not self.merging:
            self._merger = asyncio.create_task(self._merge_while_wanted(), name=f"merge-{self.name}")

    async def _merge_while_wanted(self) -> None:
        while self._merge_wanted and not self._view.closed:
            self._merge_wanted = False
            try:
                sources = await self._merge_sources()
                if sources:
                    await self._merge(sources)
                    self._merge_wanted = True  # the merged shard may merge again
            except asyncio.CancelledError:
                raise
            except NotFound:
                return  # dropped or closed meanwhile
            except Exception:
                log.exception("merging shards of %s failed", self.name)
                return

    async def _merge_sources(self) -> list[ShardUnit]:
        """The sealed shards to merge next, marked as merging; none when nothing fits."""
        units = self.units
        sizes: list[int | None] = []
        total = 0
        for position, unit in enumerate(units):
            points = await unit.count()
            total += points
            eligible = position < len(units) - 1 and unit.sealed and not unit.engine_idf
            sizes.append(points if eligible else None)
        chosen = [units[position] for position in plan(sizes, total, self._options.merge_fraction)]
        # Checked with no await since the plan's counts: a build that started meanwhile wins.
        if not chosen or self.units is not units or any(u.building or u.merging for u in chosen):
            return []
        for unit in chosen:
            unit.merging = True
        return chosen

    async def _merge(self, sources: list[ShardUnit]) -> None:
        """Merge ``sources`` into one shard while they keep serving (edge_merge.py)."""
        staging = self.root / f"{MERGE_PREFIX}{uuid.uuid4().hex}"
        config = edge_config(self.dimension, self._options, self.sparse, engine_idf=False)
        started = time.perf_counter()
        committed = False
        try:
            async with self._optimize_slots:
                for unit in sources:
                    await unit.start_journal()
                await self._fill_merged(sources, staging, config)
                report = await run_optimizer(staging, self._options)
                async with self._write_lock:
                    caught_up = [len(unit.journal()) for unit in sources]
                await self._run(lambda: _replay(staging, config, sources, [0] * len(sources), caught_up))
                async with self._write_lock, self._view.exclusive():
                    if self._view.closed:
                        raise self._gone()
                    swap_started = time.perf_counter()
                    await self._run(lambda: _replay(staging, config, sources, caught_up, None))
                    record = MergeRecord(
                        into=sources[-1].dirname,
                        staging=staging.name,
                        sources=tuple(unit.dirname for unit in sources),
                    )
                    await self._run(lambda: record.write(self.root))
                    committed = True
                    retired = await self._commit_merge(sources, record)
                    swap_ms = round((time.perf_counter() - swap_started) * 1000, 1)
            await self._run(lambda: _remove_all(retired))
        except BaseException:
            if not committed:
                for unit in sources:
                    unit.stop_journal()
                    unit.merging = False
                await self._run(lambda: shutil.rmtree(staging, ignore_errors=True))
            raise
        fields = {
            "into": record.into,
            "points": report.get("points"),
            "shards": len(self.units),
            "seconds": round(time.perf_counter() - started, 3),
            "swap_ms": swap_ms,
        }
        log.info("merged %d shards of %s", len(sources), self.name, extra={"fields": fields})

    async def _fill_merged(self, sources: list[ShardUnit], staging: Path, config: Any) -> None:
        """Create the merged shard and copy the sources' points into it, a page per call."""
        await self._run(lambda: create_shard(staging, config))
        target = await self._run(lambda: EdgeShard.load(str(staging), config))
        try:
            for unit in sources:
                offset = None
                while True:
                    offset = await unit.read(functools.partial(copy_page, target=target, offset=offset))
                    if offset is None:
                        break
            await self._run(target.flush)
        finally:
            await self._run(target.close)

    async def _commit_merge(self, sources: list[ShardUnit], record: MergeRecord) -> list[Path]:
        """With writes and searches held off and the record written: close the sources, put
        the merged shard in their place on disk and in memory; returns the retired dirs.

        A failure past the record leaves this process's view of the collection broken (its
        sources closed); the record makes the next open finish the merge."""
        terms = await self._run(lambda: TermStats.merged(unit.terms for unit in sources))
        for unit in sources:
            await unit.close()
        retired = await self._run(lambda: roll_forward(self.root, record, TERMS_SUFFIX))
        index = self.indexes[self.units.index(sources[-1])]
        merged = await self._run(lambda: self._open_unit(index))
        merged.sealed, merged.terms = True, terms
        await self._run(lambda: self._save_terms(merged, merged.shard))
        kept = [
            (merged if unit is sources[-1] else unit, at)
            for unit, at in zip(self.units, self.indexes, strict=True)
            if unit is sources[-1] or unit not in sources
        ]
        self.units = [unit for unit, _ in kept]
        self.indexes = [at for _, at in kept]
        return retired

    async def info(self) -> tuple[int, int]:
        """(points, indexed vectors) summed over shards."""
        pairs = [await unit.info() for unit in self.units]
        return sum(p for p, _ in pairs), sum(i for _, i in pairs)

    async def unindexed(self) -> int:
        return sum([await unit.unindexed() for unit in self.units])

    # ----- lifecycle -----

    async def close(self) -> None:
        """Stop background work, wait for calls in flight, close every shard."""
        if self._merger is not None:
            self._merger.cancel()
            await asyncio.gather(self._merger, return_exceptions=True)
        async with self._view.exclusive():
            self._view.closed = True
        for unit in self.units:
            await unit.close()


def _remove_all(paths: Sequence[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _replay(
    path: Path, config: Any, sources: Sequence[ShardUnit], start: Sequence[int], end: Sequence[int] | None
) -> None:
    """Blocking: apply the sources' journalled writes ``start[i]:end[i]`` to the merged shard
    at ``path``, in the order they were made across all of them: the same access-list change
    reaches every source, and replaying one source's older change after another's newer one
    would undo it on the other's points."""
    journalled = sorted(
        (
            entry
            for position, unit in enumerate(sources)
            for entry in unit.journal()[start[position] : None if end is None else end[position]]
        ),
        key=lambda entry: entry[0],
    )
    if not journalled:
        return
    shard = EdgeShard.load(str(path), config)
    try:
        apply_writes(shard, [operation for _, operation in journalled])
    finally:
        shard.close()


def _sparse_records(shard: EdgeShard, ids: list[str], sparse: bool) -> list[tuple[str, list[int] | None]]:
    """Blocking: (id, sparse term ids) of those ``ids`` the shard holds."""
    if not ids:
        return []
    records = shard.retrieve(cast("list[PointId]", ids), False, [SPARSE] if sparse else False)
    return [(str(record.id), _sparse_of(record) if sparse else None) for record in records]


def _cut(found: Found, limit: int) -> float:
    """The score a candidate must beat to displace one of the best ``limit``: the
    ``limit``-th best plus a tie's margin (see :func:`_best`); minus infinity while fewer
    than ``limit`` were found."""
    if len(found) < limit:
        return -math.inf
    score = heapq.nlargest(limit, (score for _, score in found.values()))[-1]
    return score + 1e-6 * abs(score) + 1e-12


def _best(found: dict[PointId, tuple[int, float]], limit: int) -> list[tuple[PointId, float]]:
    """The ``limit`` best candidates, best first, ties by id (as rank_and_keep orders).

    Scores within a millionth of each other count as tied: float32 noise (a first shard that
    applies the engine's IDF gets its query weights divided by it) must not reorder tied
    candidates, since RRF fuses ranks."""
    ranked = sorted(((point_id, score) for point_id, (_, score) in found.items()), key=lambda c: -c[1])
    ordered: list[tuple[PointId, float]] = []
    group: list[tuple[PointId, float]] = []
    for candidate in ranked:
        if group and group[0][1] - candidate[1] > 1e-6 * abs(group[0][1]):
            ordered.extend(sorted(group, key=lambda c: c[0]))
            group = []
            if len(ordered) >= limit:
                return ordered[:limit]
        group.append(candidate)
    ordered.extend(sorted(group, key=lambda c: c[0]))
    return ordered[:limit]


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
