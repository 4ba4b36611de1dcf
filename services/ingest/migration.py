"""A knowledge base's move to another embedding model, in the catalog: start, targets, switch.

Why a second collection: vectors of two models cannot share one (other dimension, other
space), and re-embedding in place would leave searches with a half-converted knowledge base.
So a migration fills a *shadow* collection (``<kb>__v<n>``) while the active one keeps serving,
and the catalog is the one place that maps a knowledge base to the collection (and model)
searches use: the switch is one transaction that changes both, so no reader ever sees a
half-filled or empty collection. The retrieve service only ever sees distinct collection
names; no backend knows about migrations.

Meanwhile uploads are indexed into both collections (:func:`targets_of`, read with the job's
claim, before it embeds), deletes apply to both, and each file row records which of its
generations the shadow holds in full (``shadow_generation``): written by the migration's
copy of the file, or by an upload that indexed into both. The switch happens once every
indexed file's live generation is in the shadow and no upload is in flight, so the catalog's
chunk counts describe the new collection exactly. A job that indexed only into a collection
that stopped being active meanwhile cannot finish (:class:`StaleTargets`): it runs again.
Cancelling (or failing) forgets the shadow; the active collection was never touched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from services.common.errors import FailedPrecondition
from services.common.names import is_collection_of, next_collection
from services.ingest.store.access import FileAccessList
from services.ingest.store.catalog import Catalog
from services.ingest.store.records import ACTIVE_STATES, JobRecord, JobState
from services.ingest.store.tables import (
    NO_SYNC,
    FileRow,
    JobRow,
    KnowledgeBaseRow,
    RetiredCollectionRow,
    job_record,
)

MIGRATE_KIND = "migrate"
# shadow_generation of a file whose live points cannot be rebuilt (the original was replaced
# by an upload that then failed): it arrives in the new collection empty.
NOTHING_TO_COPY = "-"
_ACTIVE = [state.value for state in ACTIVE_STATES]


class StaleTargets(Exception):
    """The job indexed into collections the knowledge base no longer searches (a migration
    switched meanwhile): its work must be redone against the current ones."""


@dataclass(frozen=True)
class Target:
    """A collection an upload is indexed into, and the model (empty: the default) to embed with."""

    collection: str
    model: str
    shadow: bool = False


@dataclass(frozen=True)
class FileState:
    """What the migration needs to know of one file to bring it into the shadow."""

    name: str
    state: JobState
    job_id: str
    content_hash: str
    shadow_generation: str


# The knowledge base's columns targets_of reads, for a query that reads them beside others
# (a job's claim: see JobLifecycle.claim_jobs).
TARGET_COLUMNS = (
    KnowledgeBaseRow.collection.label("kb_collection"),
    KnowledgeBaseRow.embed_model.label("kb_embed_model"),
    KnowledgeBaseRow.shadow_collection.label("kb_shadow_collection"),
    KnowledgeBaseRow.shadow_model.label("kb_shadow_model"),
)


def targets_of(active: str, model: str, shadow: str, shadow_model: str) -> list[Target]:
    """The collections an upload goes to, given a knowledge base's active collection and
    model and its shadow's (empty when no migration runs)."""
    found = [Target(active, model)]
    if shadow:
        found.append(Target(shadow, shadow_model, shadow=True))
    return found


def collection_taken(session: Session, name: str) -> str | None:
    """The knowledge base whose collection (active or shadow) ``name`` is, if any."""
    return session.scalar(
        select(KnowledgeBaseRow.name).where(
            or_(
                and_(KnowledgeBaseRow.name == name, KnowledgeBaseRow.collection == ""),
                KnowledgeBaseRow.collection == name,
                KnowledgeBaseRow.shadow_collection == name,
            )
        )
    )


def _lock(session: Session, kb: str) -> KnowledgeBaseRow | None:
    """The knowledge base's row, locked after its files' rows: the catalog's one lock order
    (file, then job, then knowledge base; see services.ingest.jobs), so a switch and a job
    finishing at the same time never deadlock on PostgreSQL."""
    kb_id = session.scalar(select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.name == kb))
    if kb_id is None:
        return None
    session.execute(select(FileRow.id).where(FileRow.kb_id == kb_id).with_for_update())
    return session.scalar(select(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb_id).with_for_update())


class Migrations:
    """Every catalog step of a migration; each method is one short transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._database = catalog.database

    def start(self, kb: str, model: str, request_id: str = "") -> JobRecord:
        """Record a migration of ``kb`` to ``model`` (the id the embed service reports) as a
        QUEUED job of kind ``migrate``, and name its shadow collection."""
        with self._database.session(write=True) as session:
            row = _lock(session, kb)
            if row is None:
                self._database.kb_row(session, kb)  # raises NotFound
                raise AssertionError("unreachable")
            if row.migration_job:
                raise FailedPrecondition(
                    f"knowledge base {kb!r} is already migrating to {row.shadow_model!r} "
                    f"(job {row.migration_job}); cancel that job first"
                )
            if row.embed_model == model:
                raise FailedPrecondition(f"knowledge base {kb!r} already uses embedding model {model!r}")
            shadow = next_collection(kb, row.active_collection)
            # Not another knowledge base's name either: it may not have a collection yet.
            while collection_taken(session, shadow) is not None or self._is_kb(session, shadow):
                shadow = next_collection(kb, shadow)
            now = time.time()
            job = JobRow(
                id=str(uuid.uuid4()),
                kb_id=row.id,
                file_name="",
                content_hash="",
                state=JobState.QUEUED.value,
                progress=0.0,
                chunks=0,
                error="",
                attempts=0,
                chunk_size=0,
                chunk_overlap=0,
                request_id=request_id,
                created_at=now,
                updated_at=now,
                lease_until=0.0,
                retries=0,
                retry_at=0.0,
                waiting_for="",
                waiting_since=0.0,
                kind=MIGRATE_KIND,
                embed_model=model,
            )
            session.add(job)
            row.shadow_collection, row.shadow_model, row.migration_job = shadow, model, job.id
            session.execute(
                update(FileRow).where(FileRow.kb_id == row.id).values(shadow_generation="", shadow_chunks=0),
                execution_options=NO_SYNC,
            )
            session.flush()
            return job_record(kb, job)

    @staticmethod
    def _is_kb(session: Session, name: str) -> bool:
        return session.scalar(select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.name == name)) is not None

    def is_retired(self, name: str) -> bool:
        with self._database.session(write=False) as session:
            return session.get(RetiredCollectionRow, name) is not None

    def targets(self, kb: str) -> list[Target]:
        """Where an upload of ``kb`` is indexed now: the active collection, and the shadow
        while a migration runs."""
        with self._database.session(write=False) as session:
            row = self._database.kb_row(session, kb)
            return targets_of(row.active_collection, row.embed_model, row.shadow_collection, row.shadow_model)

    def collections(self, kb: str) -> list[str]:
        """Every collection holding points of ``kb`` (what a delete must reach)."""
        return [target.collection for target in self.targets(kb)]

    @staticmethod
    def acl_collections(session: Session, kb_id: int) -> list[str]:
        """Inside a transaction holding one of the knowledge base's file rows: every collection
        a change of a file's access list must reach. The active one, the shadow while a
        migration fills it, and any a switch retired that is not dropped yet (a search that
        read the knowledge base's record just before the switch still reads it)."""
        kb, active, shadow = session.execute(
            select(
                KnowledgeBaseRow.name, KnowledgeBaseRow.collection, KnowledgeBaseRow.shadow_collection
            ).where(KnowledgeBaseRow.id == kb_id)
        ).one()
        found = [active or kb, *([shadow] if shadow else [])]
        for name in session.scalars(select(RetiredCollectionRow.name)).all():
            # Not one that a knowledge base created since under the same name uses again.
            if name not in found and is_collection_of(kb, name) and collection_taken(session, name) is None:
                found.append(name)
        return found

    @staticmethod
    def check_finish(
        session: Session, kb_id: int, job_id: str, written: list[str], chunks: int = 0
    ) -> list[str]:
        """Inside a job's finishing transaction: the collections of ``written`` still in use
        (its swap runs there); raises StaleTargets when the active one is not among them.
        The knowledge base's row is read shared, so a switch waits for the finish or the
        finish sees the switch."""
        row = session.scalar(
            select(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb_id).with_for_update(read=True)
        )
        if row is None:
            return written
        if row.active_collection not in written:
            raise StaleTargets(job_id)
        if row.shadow_collection:
            # In the shadow too, or the migration must copy this generation itself.
            held = row.shadow_collection in written
            session.execute(
                update(FileRow)
                .where(FileRow.job_id == job_id)
                .values(shadow_generation=job_id if held else "", shadow_chunks=chunks if held else 0),
                execution_options=NO_SYNC,
            )
        return [name for name in written if name in (row.active_collection, row.shadow_collection)]

    def files(self, kb: str) -> list[FileState]:
        with self._database.session(write=False) as session:
            kb_id = self._database.kb_row(session, kb).id
            rows = session.execute(
                select(
                    FileRow.name,
                    FileRow.state,
                    FileRow.job_id,
                    FileRow.content_hash,
                    FileRow.shadow_generation,
                )
                .where(FileRow.kb_id == kb_id)
                .order_by(FileRow.name)
            ).all()
        return [
            FileState(name, JobState(state), job_id, content_hash, shadow or "")
            for name, state, job_id, content_hash, shadow in rows
        ]

    def live_generation(self, kb: str, file: FileState) -> JobRecord | None:
        """The job whose points of ``file`` are indexed now and can be rebuilt from the stored
        original: the file's job when it succeeded, else its latest succeeded job for the
        same content (a failed or cancelled reindex). None: nothing to rebuild."""
        with self._database.session(write=False) as session:
            kb_id = self._database.kb_row(session, kb).id
            row = session.scalar(
                select(JobRow)
                .where(
                    JobRow.kb_id == kb_id,
                    JobRow.file_name == file.name,
                    JobRow.content_hash == file.content_hash,
                    JobRow.state == JobState.SUCCEEDED.value,
                )
                .order_by(JobRow.updated_at.desc())
                .limit(1)
            )
            return job_record(kb, row) if row is not None else None

    def mark_copied(
        self,
        kb: str,
        migration_id: str,
        file: FileState,
        generation: str,
        chunks: int = 0,
        acl: Sequence[str] | None = None,
        reapply: Callable[[list[str], list[str]], None] | None = None,
    ) -> bool:
        """The shadow holds ``generation`` of the file in full, ``chunks`` points; False when the
        file changed (or went, or the migration ended) since it was read, so that copy is stale.

        ``acl`` are the tokens the copy's points carry (read from the catalog before they were
        written): when the file's access list changed since, ``reapply`` gives the shadow's
        points the current tokens, holding the file's row (as JobLifecycle.finish_job does for
        an upload), so a change racing the copy cannot leave them with the old list."""
        with self._database.session(write=True) as session:
            kb_row = self._database.kb_row(session, kb)
            if kb_row.migration_job != migration_id:
                return False
            shadow = kb_row.shadow_collection
            changed = session.execute(
                update(FileRow)
                .where(
                    FileRow.kb_id == kb_row.id,
                    FileRow.name == file.name,
                    FileRow.job_id == file.job_id,
                    FileRow.content_hash == file.content_hash,
                    FileRow.state.not_in(_ACTIVE),
                )
                .values(shadow_generation=generation, shadow_chunks=chunks),
                execution_options=NO_SYNC,
            )
            if not changed.rowcount:  # type: ignore[attr-defined]  # CursorResult
                return False
            if reapply is not None:
                # The update holds the file's row: a change of its list waits for this commit
                # (and then reaches the shadow itself) or was committed before this read.
                stored = session.scalar(
                    select(FileRow.access).where(FileRow.kb_id == kb_row.id, FileRow.name == file.name)
                )
                current = FileAccessList.from_json(stored or "").tokens()
                if acl is None or current != list(acl):
                    reapply([shadow], current)
            return True

    def switch(self, kb: str, migration_id: str, drop_delay_s: float = 0.0) -> tuple[str, str] | str:
        """Make the shadow the active collection and its model the knowledge base's, at once.

        Returns (old collection, new collection), or why it cannot switch yet: uploads in
        flight, or files not yet in the shadow. The migration job succeeds in the same step,
        and the old collection is retired, to be dropped after ``drop_delay_s``
        (:meth:`due_retired`).
        """
        with self._database.session(write=True) as session:
            row = _lock(session, kb)
            if row is None or row.migration_job != migration_id:
                return "the migration was cancelled"
            files = session.execute(
                select(FileRow.id, FileRow.state, FileRow.shadow_chunks, FileRow.shadow_generation).where(
                    FileRow.kb_id == row.id
                )
            ).all()
            busy = sum(1 for file in files if file.state in _ACTIVE)
            if busy:
                return f"waiting for {busy} upload(s) in flight"
            missing = sum(1 for file in files if not file.shadow_generation)
            if missing:
                return f"{missing} file(s) not yet in the new collection"
            # Each file's count becomes what the new collection holds of it (the same as before,
            # unless re-parsing its original gave other chunks: a newer parser, captions).
            session.execute(
                update(FileRow).where(FileRow.kb_id == row.id).values(chunks=FileRow.shadow_chunks),
                execution_options=NO_SYNC,
            )
            old, new = row.active_collection, row.shadow_collection
            retired = session.get(RetiredCollectionRow, old)
            if retired is None:
                session.add(RetiredCollectionRow(name=old, drop_after=time.time() + drop_delay_s))
            else:
                retired.drop_after = time.time() + drop_delay_s
            row.collection, row.embed_model = new, row.shadow_model
            row.shadow_collection = row.shadow_model = row.migration_job = ""
            session.execute(
                update(FileRow).where(FileRow.kb_id == row.id).values(shadow_generation="", shadow_chunks=0),
                execution_options=NO_SYNC,
            )
            total = sum(file.shadow_chunks for file in files)
            session.execute(
                update(JobRow)
                .where(JobRow.id == migration_id, JobRow.state.in_(_ACTIVE))
                .values(
                    state=JobState.SUCCEEDED.value,
                    progress=1.0,
                    chunks=total,
                    error="",
                    lease_until=0.0,
                    updated_at=time.time(),
                ),
                execution_options=NO_SYNC,
            )
            return old, new

    def abandon(self, kb: str, migration_id: str) -> str | None:
        """Forget the shadow of migration ``migration_id`` (cancelled or failed); returns the
        collection to drop, None when that migration no longer holds one."""
        with self._database.session(write=True) as session:
            row = _lock(session, kb)
            if row is None or row.migration_job != migration_id:
                return None
            shadow = row.shadow_collection
            row.shadow_collection = row.shadow_model = row.migration_job = ""
            session.execute(
                update(FileRow).where(FileRow.kb_id == row.id).values(shadow_generation="", shadow_chunks=0),
                execution_options=NO_SYNC,
            )
            return shadow

    def due_retired(self) -> list[str]:
        """Retired collections whose delay has passed and that no knowledge base uses again
        (a knowledge base deleted and created anew under the old name keeps its collection)."""
        with self._database.session(write=False) as session:
            names = session.scalars(
                select(RetiredCollectionRow.name).where(RetiredCollectionRow.drop_after <= time.time())
            ).all()
            return [name for name in names if collection_taken(session, name) is None]

    def forget_retired(self, name: str) -> None:
        with self._database.session(write=True) as session:
            session.execute(delete(RetiredCollectionRow).where(RetiredCollectionRow.name == name))
