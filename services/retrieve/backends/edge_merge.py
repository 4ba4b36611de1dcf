"""Merging small sealed shards of an edge knowledge base into one, in the background.

Why: a search asks every shard (:mod:`.edge_collection`), and each ask costs about the same
whatever the shard's size: an HNSW search over a 10k-point shard takes 0.9 ms (384-d, the
engine's default ef), over ten times as many points not much more, and a sparse ask adds
0.25 ms. With sealing alone a knowledge base has about 10 shards at 100k points and 34 at
1M, so search time grows with the shard count, not with the data. Merging sealed shards
whose points together stay within ``edge_merge_fraction`` of the knowledge base keeps the
count near ``1 / edge_merge_fraction`` plus a few, while a merge's extra disk stays within
about twice that fraction (the merged shard, plus the new segment of its index build).

How a merge runs, while its sources keep serving reads, deletes and access-list changes:

1. The sources start journalling their writes (the journal of :class:`.edge_shard.ShardUnit`).
2. Their points are copied page by page into ``~merge-<hex>/``, a new shard (each page one
   short engine call in the retrieve process: the copy never holds the GIL for long).
3. The merged shard's index is built by the optimizer child process, in place: nobody else
   has it open, so unlike a build of a live shard it needs no copy.
4. The journals so far are applied to it; then, while searches and writes wait, the rest.
5. The commit record ``merge.json`` is written, the sources are renamed to ``~trash-<name>``
   and the merged shard takes the name of the newest source. Writing the record is the
   commit point: :func:`recover_merge` finishes a merge whose record exists and discards a
   ``~merge-*`` directory without one.

Sources are sealed shards only (the write shard still takes points), never one building its
index, and never the engine-IDF first shard of a collection made before sharding. Point ids
are unique across sealed shards, so which sealed shards merge does not change any result:
the smallest ones go first.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qdrant_edge import EdgeShard, Point, ScrollRequest, UpdateOperation

from services.retrieve.backends.edge_shard import TRASH_PREFIX

if TYPE_CHECKING:
    from qdrant_edge import PointId

MERGE_PREFIX = "~merge-"
RECORD_FILE = "merge.json"
# Points per copy call: short enough that a search waits at most a few ms behind one.
COPY_PAGE = 256


def plan(sizes: Sequence[int | None], total: int, fraction: float) -> list[int]:
    """Positions of the shards to merge next (at least two), or none.

    ``sizes`` are the points of each shard, None where a shard may not take part. The
    smallest shards are taken while their sum stays within ``fraction`` of ``total``."""
    cap = fraction * total
    chosen: list[int] = []
    merged = 0
    for position, size in sorted(
        ((p, s) for p, s in enumerate(sizes) if s is not None), key=lambda item: (item[1], item[0])
    ):
        if merged + size > cap:
            break
        chosen.append(position)
        merged += size
    return sorted(chosen) if len(chosen) >= 2 else []


def copy_page(source: EdgeShard, target: EdgeShard, offset: PointId | None) -> PointId | None:
    """Blocking: copy one page of points (vectors and payload) from ``offset``; returns the
    next offset, None after the last page."""
    records, following = source.scroll(
        ScrollRequest(offset=offset, limit=COPY_PAGE, with_payload=True, with_vector=True)
    )
    if records:
        target.update(
            UpdateOperation.upsert_points(
                [Point(record.id, record.vector or {}, record.payload or {}) for record in records]
            )
        )
    return following


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """What a committed merge replaces: ``sources`` (directory names) by ``staging``, which
    is renamed to ``into`` (the newest source's name)."""

    into: str
    staging: str
    sources: tuple[str, ...]

    def write(self, root: Path) -> None:
        """Blocking: the commit point, written atomically and durably."""
        partial = root / (RECORD_FILE + ".partial")
        with partial.open("w", encoding="utf-8") as out:
            json.dump(asdict(self), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, root / RECORD_FILE)
        _sync_dir(root)

    @classmethod
    def read(cls, root: Path) -> MergeRecord | None:
        try:
            raw = json.loads((root / RECORD_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return cls(into=raw["into"], staging=raw["staging"], sources=tuple(raw["sources"]))


def roll_forward(root: Path, record: MergeRecord, stats_suffix: str) -> list[Path]:
    """Blocking and idempotent: put a committed merge's shard in place of its sources.

    The staging directory is renamed last, so while it exists no source has been replaced
    yet and every source directory still present is one to retire. The sources' saved term
    statistics (``<name><stats_suffix>``) are removed before the rename: a stale file must
    never be read as the merged shard's. Returns the retired directories, for the caller to
    delete."""
    retired: list[Path] = []
    staging = root / record.staging
    if staging.exists():
        for name in record.sources:
            source = root / name
            if source.exists():
                trash = root / f"{TRASH_PREFIX}{name}"
                shutil.rmtree(trash, ignore_errors=True)
                os.rename(source, trash)
                retired.append(trash)
        for name in record.sources:
            (root / (name + stats_suffix)).unlink(missing_ok=True)
        os.rename(staging, root / record.into)
        _sync_dir(root)
    (root / RECORD_FILE).unlink(missing_ok=True)
    return retired


def recover_merge(root: Path, stats_suffix: str) -> None:
    """Blocking, at open: finish a committed merge and discard an uncommitted one."""
    (root / (RECORD_FILE + ".partial")).unlink(missing_ok=True)
    record = MergeRecord.read(root)
    if record is not None:
        for trash in roll_forward(root, record, stats_suffix):
            shutil.rmtree(trash, ignore_errors=True)
    for entry in root.iterdir():
        if entry.name.startswith(MERGE_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
