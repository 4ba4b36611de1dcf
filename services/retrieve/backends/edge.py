"""The ``edge`` backend: Qdrant's engine embedded in the retrieve process (qdrant-edge-py).

One directory per knowledge base under ``edge_dir``, holding several engine shards (see
:mod:`.edge_collection` for the layout and sharding, :mod:`.edge_shard` for index builds).
The engine allows one opener per shard, so this backend opens each collection once, keeps it
in a dict, and takes an exclusive lock on ``edge_dir`` at start: a second retrieve process on
the same directory fails fast instead of hitting WAL lock errors later. Blocking engine calls
run on a bounded thread pool.

Scores: cosine similarity mapped to [0, 1] by :mod:`services.retrieve.scores`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from services.common.errors import DependencyUnavailable, FailedPrecondition, InvalidArgument, NotFound
from services.retrieve.backends.edge_collection import (
    STAGING_PREFIX,
    EdgeCollection,
    create_on_disk,
    is_collection,
)
from services.retrieve.backends.edge_priority import SearchFirst
from services.retrieve.backends.edge_shard import ShardOptions, run_blocking
from services.retrieve.config import RetrieveSettings
from services.retrieve.domain import CollectionStats, Hit, PointRecord, SearchQuery
from services.retrieve.metrics import OPEN_SHARDS

log = logging.getLogger("zhiku.retrieve.edge")

T = TypeVar("T")

LOCK_FILE = "~lock"
TRASH_PREFIX = "~trash-"


class EdgeBackend:
    name = "edge"

    def __init__(self, settings: RetrieveSettings) -> None:
        self.root: Path = settings.shard_root
        self._workers = settings.edge_workers
        self._switch_interval_s = settings.edge_switch_interval_ms / 1000
        self._previous_switch_interval_s: float | None = None  # read at start, restored at close
        self._options = ShardOptions.from_settings(settings)
        self._collections: dict[str, EdgeCollection] = {}
        # Guards opening, creating and dropping shards (rare); calls on open shards skip it.
        self._catalog = asyncio.Lock()
        # One index build at a time per process: each child uses every core it can get.
        self._optimize_slots = asyncio.Semaphore(1)
        # Process-wide, as the GIL is: writes of every collection give way to any search.
        self._search_first = SearchFirst(settings.edge_write_yield_ms / 1000)
        self._executor: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None

    # ----- lifecycle -----

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FailedPrecondition(
                f"edge_dir {self.root} is in use by another retrieve process (one opener per shard)"
            ) from None
        self._lock_fd = fd
        # Process-wide (restored at close): engine calls hold the GIL, so searches and
        # writes take turns at it.
        self._previous_switch_interval_s = sys.getswitchinterval()
        sys.setswitchinterval(self._switch_interval_s)
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="edge")
        await self._run(self._sweep)
        log.info("edge backend ready", extra={"fields": {"edge_dir": str(self.root)}})

    def _sweep(self) -> None:
        """Remove what an interrupted create or drop left behind."""
        for entry in self.root.iterdir():
            if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(entry, ignore_errors=True)

    async def close(self) -> None:
        async with self._catalog:
            for collection in list(self._collections.values()):
                await self._close_collection(collection)
            self._collections.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._previous_switch_interval_s is not None:
            sys.setswitchinterval(self._previous_switch_interval_s)
            self._previous_switch_interval_s = None

    async def _close_collection(self, collection: EdgeCollection) -> None:
        try:
            await collection.close()
        finally:
            OPEN_SHARDS.dec()

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise DependencyUnavailable("retrieve edge backend is not started")
        return await run_blocking(self._executor, fn)

    # ----- shards -----

    def _dir(self, name: str) -> Path:
        return self.root / name

    async def _lookup_locked(self, name: str) -> EdgeCollection | None:
        """Open collection ``name``, opening it from disk if needed; caller holds the catalog."""
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        root = self._dir(name)
        if not await self._run(lambda: is_collection(root)):
            return None
        if self._executor is None:
            raise DependencyUnavailable("retrieve edge backend is not started")
        executor = self._executor
        collection = await self._run(
            lambda: EdgeCollection.open(
                name, root, executor, self._options, self._optimize_slots, self._search_first
            )
        )
        self._collections[name] = collection
        OPEN_SHARDS.inc()
        collection.want_merge()  # shards left mergeable (merging was off, or a merge failed)
        return collection

    async def collection(self, name: str) -> EdgeCollection:
        """The open collection ``name``; NotFound when the knowledge base has no collection."""
        collection = self._collections.get(name)
        if collection is None:
            async with self._catalog:
                collection = await self._lookup_locked(name)
        if collection is None:
            raise NotFound(f"collection {name!r} not found")
        return collection

    # ----- RetrieveBackend -----

    async def ensure_collection(self, collection: str, dimension: int) -> bool:
        async with self._catalog:
            existing = await self._lookup_locked(collection)
            if existing is None:
                root = self._dir(collection)
                await self._run(lambda: create_on_disk(root, dimension, self._options))
                await self._lookup_locked(collection)
                log.info("created collection %s", collection, extra={"fields": {"dimension": dimension}})
                return True
        if existing.dimension != dimension:
            raise InvalidArgument(
                f"collection {collection!r} exists with dimension {existing.dimension}, not {dimension}"
            )
        return False

    async def has_sparse(self, collection: str) -> bool:
        return (await self.collection(collection)).sparse

    async def upsert(self, collection: str, points: Sequence[PointRecord]) -> int:
        return await (await self.collection(collection)).upsert(list(points))

    async def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        return await (await self.collection(collection)).search(query)

    async def delete_by_file(
        self,
        collection: str,
        file_name: str,
        keep: tuple[tuple[str, str], ...] = (),
        only: tuple[tuple[str, str], ...] = (),
    ) -> int:
        return await (await self.collection(collection)).delete_by_file(file_name, keep, only)

    async def set_file_acl(self, collection: str, file_name: str, acl: tuple[str, ...]) -> int:
        return await (await self.collection(collection)).set_file_acl(file_name, acl)

    async def drop_collection(self, collection: str) -> bool:
        async with self._catalog:
            opened = self._collections.pop(collection, None)
            if opened is not None:
                await self._close_collection(opened)
            root = self._dir(collection)
            if not await self._run(lambda: is_collection(root)):
                return False
            trash = self.root / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
            await self._run(lambda: os.rename(root, trash))
        await self._run(lambda: shutil.rmtree(trash, ignore_errors=True))
        log.info("dropped collection %s", collection)
        return True

    async def stats(self, collection: str) -> CollectionStats:
        try:
            opened = await self.collection(collection)
            points = await opened.count()
        except NotFound:
            return CollectionStats(exists=False)
        return CollectionStats(exists=True, points=points, dimension=opened.dimension, sparse=opened.sparse)

    async def optimize(self, collection: str) -> str:
        """Build the index of one collection now (bench and operators; normally automatic)."""
        return await (await self.collection(collection)).optimize()
