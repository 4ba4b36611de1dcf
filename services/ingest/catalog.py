"""The catalog: knowledge bases, files and ingest jobs in SQL (SQLite embedded, PostgreSQL deployed).

The API process and the Celery worker write the same rows concurrently, so every state change
the worker makes is a conditional UPDATE (``... WHERE state IN active``): a job cancelled by a
newer upload or a delete can never be flipped back to succeeded by a worker that was still
running it. On SQLite the file runs in WAL mode (readers never wait for the writer), with a busy
timeout, and write transactions start with ``BEGIN IMMEDIATE`` so two writers queue up instead
of failing on a read-to-write lock upgrade.

Crash safety: a worker holding a job renews ``lease_until`` (heartbeats); a job in a running
stage whose lease expired belongs to a dead worker (SIGKILL, OOM, lost node), and
:meth:`Catalog.sweep` hands it back to the queue. Claims are conditional too
(:meth:`Catalog.begin_attempt`), so a redelivered duplicate message never runs a job twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from services.common.database import WRITE_OPTION, add_columns, is_sqlite, make_engine
from services.common.errors import AlreadyExists, DependencyUnavailable, NotFound, job_not_found, kb_not_found
from services.ingest.models import (
    ACTIVE_STATES,
    RUNNING_STATES,
    FileRecord,
    Job,
    JobState,
    KnowledgeBase,
)

T = TypeVar("T")
# Bulk UPDATEs here never touch rows loaded as objects in the same session that are used
# afterwards, so the ORM need not evaluate them against its identity map (CPU per statement).
_NO_SYNC = {"synchronize_session": False}
_ACTIVE = [state.value for state in ACTIVE_STATES]
_RUNNING = [state.value for state in RUNNING_STATES]
# Columns added after the first release, created on existing databases by create_schema.
_ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "jobs": {
        "splitter": "VARCHAR(16) NOT NULL DEFAULT 'recursive'",
        "title_enhance": "BOOLEAN NOT NULL DEFAULT FALSE",
        "lease_until": "DOUBLE PRECISION NOT NULL DEFAULT 0",
        "retries": "INTEGER NOT NULL DEFAULT 0",
        "retry_at": "DOUBLE PRECISION NOT NULL DEFAULT 0",
        "waiting_for": "VARCHAR(32) NOT NULL DEFAULT ''",
        "waiting_since": "DOUBLE PRECISION NOT NULL DEFAULT 0",
    }
}


class Base(DeclarativeBase):
    pass


class KnowledgeBaseRow(Base):
    __tablename__ = "knowledge_bases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    embed_model: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[float] = mapped_column(Double)


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("kb_id", "name", name="uq_files_kb_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="")
    # The job that owns this file's vectors now; older jobs lose the right to update the row.
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Double, default=0.0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    # The submitting request's id, so the worker's logs and calls join the upload's trace.
    request_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Double, index=True)
    updated_at: Mapped[float] = mapped_column(Double)
    splitter: Mapped[str] = mapped_column(String(16), default="recursive")
    title_enhance: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_until: Mapped[float] = mapped_column(Double, default=0.0)
    # Waiting for an unavailable dependency (see Catalog.requeue_waiting and Job).
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[float] = mapped_column(Double, default=0.0)
    waiting_for: Mapped[str] = mapped_column(String(32), default="")
    waiting_since: Mapped[float] = mapped_column(Double, default=0.0)


def _kb_record(row: KnowledgeBaseRow, file_count: int = 0, chunk_count: int = 0) -> KnowledgeBase:
    return KnowledgeBase(
        name=row.name,
        description=row.description,
        embed_model=row.embed_model,
        created_at=row.created_at,
        file_count=int(file_count),
        chunk_count=int(chunk_count or 0),
    )


def _file_record(kb: str, row: FileRow) -> FileRecord:
    return FileRecord(
        knowledge_base=kb,
        name=row.name,
        size=row.size,
        content_hash=row.content_hash,
        chunks=row.chunks,
        state=JobState(row.state),
        error=row.error,
        job_id=row.job_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _job_record(kb: str, row: Any, unchanged: bool = False) -> Job:
    """A Job from a JobRow, or from a plain row of the jobs table's columns."""
    return Job(
        id=row.id,
        knowledge_base=kb,
        file_name=row.file_name,
        content_hash=row.content_hash,
        state=JobState(row.state),
        progress=row.progress,
        chunks=row.chunks,
        error=row.error,
        attempts=row.attempts,
        chunk_size=row.chunk_size,
        chunk_overlap=row.chunk_overlap,
        request_id=row.request_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        splitter=row.splitter or "recursive",
        title_enhance=bool(row.title_enhance),
        lease_until=row.lease_until or 0.0,
        unchanged=unchanged,
        retries=row.retries or 0,
        retry_at=row.retry_at or 0.0,
        waiting_for=row.waiting_for or "",
        waiting_since=row.waiting_since or 0.0,
    )


class Catalog:
    """Repository over the catalog tables; every method is one short transaction."""

    def __init__(self, url: str, sqlite_busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        self.engine = make_engine(url, sqlite_busy_timeout_s, sqlite_synchronous="NORMAL")
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )
        # SQLite has one writer at a time; a writer that finds the lock taken sleeps in
        # SQLite's busy handler (1, 2, 5, 10 ... 100 ms steps) and wakes up late. Writers of
        # this process (the worker's threads) queue here instead, each woken the moment the
        # previous one commits; only writers of other processes still meet the busy handler.
        self._write_turn = threading.RLock() if self.is_sqlite else None

    # -- plumbing -------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create missing tables; safe when the API and the worker race to do it."""
        for attempt in range(3):
            try:
                Base.metadata.create_all(self.engine)
                self._add_columns()
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def _add_columns(self) -> None:
        """Add columns newer than an existing database (a catalog from an earlier release)."""
        add_columns(self.engine, _ADDED_COLUMNS)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self, write: bool) -> Iterator[Session]:
        factory = self._writes if write else self._reads
        turn = self._write_turn if write and self._write_turn is not None else contextlib.nullcontext()
        try:
            with turn, factory.begin() as session:
                yield session
        except OperationalError as error:
            raise DependencyUnavailable(f"catalog database unavailable: {error.orig}") from error

    def _retry_on_conflict(self, work: Callable[[], T]) -> T:
        """Run ``work`` again once when a concurrent insert of the same key beat it."""
        try:
            return work()
        except IntegrityError:
            return work()

    @staticmethod
    def _kb_row(session: Session, name: str) -> KnowledgeBaseRow:
        row = session.scalar(select(KnowledgeBaseRow).where(KnowledgeBaseRow.name == name))
        if row is None:
            raise kb_not_found(name)
        return row

    # -- knowledge bases ------------------------------------------------------------------

    def create_kb(self, name: str, description: str = "", embed_model: str = "") -> KnowledgeBase:
        row = KnowledgeBaseRow(
            name=name, description=description, embed_model=embed_model, created_at=time.time()
        )
        try:
            with self._session(write=True) as session:
                if session.scalar(select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.name == name)):
                    raise AlreadyExists(f"knowledge base {name!r} already exists")
                session.add(row)
        except IntegrityError:
            raise AlreadyExists(f"knowledge base {name!r} already exists") from None
        return _kb_record(row)

    def _kb_query(self) -> Any:
        return (
            select(
                KnowledgeBaseRow,
                func.count(FileRow.id),
                func.coalesce(func.sum(FileRow.chunks), 0),
            )
            .outerjoin(FileRow, FileRow.kb_id == KnowledgeBaseRow.id)
            .group_by(KnowledgeBaseRow.id)
        )

    def get_kb(self, name: str) -> KnowledgeBase:
        with self._session(write=False) as session:
            found = session.execute(self._kb_query().where(KnowledgeBaseRow.name == name)).first()
            if found is None:
                raise kb_not_found(name)
            return _kb_record(*found)

    def list_kbs(self) -> list[KnowledgeBase]:
        with self._session(write=False) as session:
            rows = session.execute(self._kb_query().order_by(KnowledgeBaseRow.name)).all()
            return [_kb_record(*row) for row in rows]

    def delete_kb(self, name: str) -> None:
        with self._session(write=True) as session:
            kb_id = self._kb_row(session, name).id
            # Explicit deletes: SQLite only cascades with foreign_keys=ON, PostgreSQL always does.
            session.execute(delete(FileRow).where(FileRow.kb_id == kb_id))
            session.execute(delete(JobRow).where(JobRow.kb_id == kb_id))
            session.execute(delete(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb_id))

    def kb_exists(self, name: str) -> bool:
        with self._session(write=False) as session:
            return (
                session.scalar(select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.name == name)) is not None
            )

    # -- files ----------------------------------------------------------------------------

    def submit_file(
        self,
        kb: str,
        file_name: str,
        size: int,
        content_hash: str,
        chunk_size: int,
        chunk_overlap: int,
        request_id: str = "",
        *,
        splitter: str = "recursive",
        title_enhance: bool = False,
        override: bool = False,
    ) -> Job:
        """Record an upload: the file row (new or replaced) and a QUEUED job that owns it.

        Content identical to the file's current upload (same hash, its job succeeded or still
        running) is a no-op unless ``override``: the answer is that job, marked ``unchanged``,
        and nothing is queued. Jobs still running for an earlier upload of the same name are
        cancelled, so only the newest content is indexed and the superseded worker cannot
        overwrite the file's state.
        """
        job_id = str(uuid.uuid4())

        def work() -> Job:
            now = time.time()
            with self._session(write=True) as session:
                kb_id = self._kb_row(session, kb).id
                # FOR UPDATE serialises concurrent uploads of one name on PostgreSQL (SQLite
                # already serialises writers with BEGIN IMMEDIATE).
                file_row = session.scalar(
                    select(FileRow).where(FileRow.kb_id == kb_id, FileRow.name == file_name).with_for_update()
                )
                if file_row is not None and not override and file_row.content_hash == content_hash:
                    current = session.get(JobRow, file_row.job_id)
                    if current is not None and current.state not in (
                        JobState.FAILED.value,
                        JobState.CANCELLED.value,
                    ):
                        return _job_record(kb, current, unchanged=True)
                if file_row is None:
                    file_row = FileRow(kb_id=kb_id, name=file_name, chunks=0, created_at=now)
                    session.add(file_row)
                else:
                    self._cancel_active(session, kb_id, file_name, f"superseded by job {job_id}")
                file_row.size = size
                file_row.content_hash = content_hash
                file_row.state = JobState.QUEUED.value
                file_row.error = ""
                file_row.job_id = job_id
                file_row.updated_at = now
                job = JobRow(
                    id=job_id,
                    kb_id=kb_id,
                    file_name=file_name,
                    content_hash=content_hash,
                    state=JobState.QUEUED.value,
                    progress=0.0,
                    chunks=0,
                    error="",
                    attempts=0,
                    chunk_size=chunk_size,
                    chunk_overlap=chunk_overlap,
                    request_id=request_id,
                    created_at=now,
                    updated_at=now,
                    splitter=splitter,
                    title_enhance=title_enhance,
                    lease_until=0.0,
                    retries=0,
                    retry_at=0.0,
                    waiting_for="",
                    waiting_since=0.0,
                )
                session.add(job)
                session.flush()
                return _job_record(kb, job)

        return self._retry_on_conflict(work)

    @staticmethod
    def _cancel_active(session: Session, kb_id: int, file_name: str, reason: str) -> None:
        session.execute(
            update(JobRow)
            .where(JobRow.kb_id == kb_id, JobRow.file_name == file_name, JobRow.state.in_(_ACTIVE))
            .values(state=JobState.CANCELLED.value, error=reason, updated_at=time.time())
        )

    def get_file(self, kb: str, file_name: str) -> FileRecord:
        with self._session(write=False) as session:
            kb_id = self._kb_row(session, kb).id
            row = session.scalar(select(FileRow).where(FileRow.kb_id == kb_id, FileRow.name == file_name))
            if row is None:
                raise NotFound(f"file {file_name!r} does not exist in knowledge base {kb!r}")
            return _file_record(kb, row)

    def find_file(self, kb: str, file_name: str) -> FileRecord | None:
        try:
            return self.get_file(kb, file_name)
        except NotFound:
            return None

    def list_files(self, kb: str) -> list[FileRecord]:
        with self._session(write=False) as session:
            kb_id = self._kb_row(session, kb).id
            rows = session.scalars(select(FileRow).where(FileRow.kb_id == kb_id).order_by(FileRow.name))
            return [_file_record(kb, row) for row in rows]

    def delete_file(self, kb: str, file_name: str) -> None:
        with self._session(write=True) as session:
            kb_id = self._kb_row(session, kb).id
            deleted = session.execute(
                delete(FileRow).where(FileRow.kb_id == kb_id, FileRow.name == file_name)
            )
            if deleted.rowcount == 0:
                raise NotFound(f"file {file_name!r} does not exist in knowledge base {kb!r}")
            self._cancel_active(session, kb_id, file_name, "file was deleted")

    # -- jobs -----------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        with self._session(write=False) as session:
            found = session.execute(
                select(JobRow, KnowledgeBaseRow.name)
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == JobRow.kb_id)
                .where(JobRow.id == job_id)
            ).first()
            if found is None:
                raise job_not_found(job_id)
            row, kb = found
            return _job_record(kb, row)

    def find_job(self, job_id: str) -> Job | None:
        try:
            return self.get_job(job_id)
        except NotFound:
            return None

    def list_jobs(self, kb: str, limit: int = 100) -> list[Job]:
        """The knowledge base's jobs, newest first."""
        with self._session(write=False) as session:
            kb_id = self._kb_row(session, kb).id
            # Plain rows, not ORM objects: clients poll this listing, hundreds of jobs a time.
            rows = session.execute(
                select(*JobRow.__table__.columns)
                .where(JobRow.kb_id == kb_id)
                .order_by(JobRow.created_at.desc(), JobRow.id)
                .limit(limit)
            )
            return [_job_record(kb, row) for row in rows]

    def cancel_job(self, job_id: str, reason: str = "cancelled by request") -> Job:
        """Cancel a queued or running job (its worker stops at its next step); a finished job
        is returned unchanged. The file keeps the points of its last finished upload."""
        with self._session(write=True) as session:
            self._lock_file_of(session, job_id)
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE))
                # A running job keeps its lease: released once its worker removed what it
                # indexed, or, if that worker dies first, by the sweeper (lapsed_cleanups).
                .values(state=JobState.CANCELLED.value, error=reason, updated_at=time.time())
            )
            if changed.rowcount:
                self._file_state(session, job_id, state=JobState.CANCELLED.value, error=reason)
        return self.get_job(job_id)

    def begin_attempt(self, job_id: str, lease_s: float = 60.0) -> Job | None:
        """Claim a job for one more attempt, leased for ``lease_s``; None when it is gone,
        finished, or held by another live worker (a duplicate delivery of its message)."""
        with self._session(write=True) as session:
            self._lock_file_of(session, job_id)
            # Plain rows and statements (no ORM objects): every job pays for this claim.
            row = session.execute(
                select(*JobRow.__table__.columns, KnowledgeBaseRow.name.label("kb_name"))
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == JobRow.kb_id)
                .where(JobRow.id == job_id)
                .with_for_update(of=JobRow)
            ).first()
            if row is None:
                return None
            now = time.time()
            if JobState(row.state).terminal:
                return None
            if row.state != JobState.QUEUED.value and (row.lease_until or 0.0) > now:
                return None
            claim = {
                "attempts": row.attempts + 1,
                "state": JobState.PARSING.value,
                "progress": 0.0,
                "error": "",
                "lease_until": now + lease_s,
                "retry_at": 0.0,
                "updated_at": now,
            }
            claimed = update(JobRow).where(JobRow.id == job_id).values(**claim)
            session.execute(claimed, execution_options=_NO_SYNC)
            self._file_state(session, job_id, state=JobState.PARSING.value)
            return _job_record(row.kb_name, SimpleNamespace(**{**row._asdict(), **claim}))

    @staticmethod
    def _lock_file_of(session: Session, job_id: str) -> None:
        """Lock the file row a job owns before touching the job: one lock order everywhere
        (file, then job, then knowledge base), so PostgreSQL never sees a deadlock."""
        session.execute(select(FileRow.id).where(FileRow.job_id == job_id).with_for_update())

    @staticmethod
    def _file_state(session: Session, job_id: str, **values: Any) -> None:
        session.execute(
            update(FileRow).where(FileRow.job_id == job_id).values(updated_at=time.time(), **values),
            execution_options=_NO_SYNC,
        )

    def _transition(self, job_id: str, job_values: dict[str, Any], file_values: dict[str, Any]) -> bool:
        with self._session(write=True) as session:
            if file_values:
                self._lock_file_of(session, job_id)
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE))
                .values(updated_at=time.time(), **job_values),
                execution_options=_NO_SYNC,
            )
            if changed.rowcount == 0:
                return False
            if file_values:
                self._file_state(session, job_id, **file_values)
            return True

    def heartbeat(self, job_id: str, lease_s: float) -> bool:
        """Extend the running job's lease; False when it is no longer active."""
        with self._session(write=True) as session:
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_RUNNING))
                .values(lease_until=time.time() + lease_s),
                execution_options=_NO_SYNC,
            )
            return bool(changed.rowcount)

    def sweep(self, max_attempts: int, queued_redeliver_s: float, queue_empty: bool = True) -> list[str]:
        """Recover jobs whose worker died; returns the ids to publish to the queue again.

        A job in a running stage whose lease expired is QUEUED again (or FAILED once it has
        used ``max_attempts`` not counting those that ended waiting for a dependency: a file
        that kills its worker every time). A job QUEUED longer than ``queued_redeliver_s``
        (past its next try, when it waits for a dependency) while the broker's queue is
        empty (``queue_empty``) may
        have lost its message (the SQL broker drops the messages a killed worker had fetched),
        so it is published again; a duplicate message is harmless, since
        :meth:`begin_attempt` lets only one delivery claim the job. (With messages still
        waiting, a long-queued job is just behind a backlog: republishing it would only grow
        the queue.)
        """
        now = time.time()
        again: list[str] = []
        with self._session(write=True) as session:
            expired = session.scalars(
                select(JobRow).where(JobRow.state.in_(_RUNNING), JobRow.lease_until < now).with_for_update()
            ).all()
            for row in expired:
                lost = f"the worker running attempt {row.attempts} stopped answering (killed or crashed)"
                if row.attempts - row.retries >= max_attempts:
                    values = {
                        "state": JobState.FAILED.value,
                        "error": f"{lost}; gave up after {row.attempts} attempts",
                    }
                else:
                    values = {"state": JobState.QUEUED.value, "progress": 0.0, "error": f"{lost}; re-queued"}
                    again.append(row.id)
                # Re-queued: lease cleared for the next claim. Failed: the lapsed lease stays,
                # so lapsed_cleanups removes the points its attempts indexed.
                lease = {"lease_until": 0.0} if values["state"] == JobState.QUEUED.value else {}
                session.execute(
                    update(JobRow)
                    .where(JobRow.id == row.id, JobRow.state == row.state)
                    .values(updated_at=now, **lease, **values)
                )
                file_values = {"state": values["state"]}
                if values["state"] == JobState.FAILED.value:
                    file_values["error"] = values["error"]
                self._file_state(session, row.id, **file_values)
            stale = (
                session.scalars(
                    select(JobRow.id).where(
                        JobRow.state == JobState.QUEUED.value,
                        JobRow.updated_at < now - queued_redeliver_s,
                        JobRow.retry_at < now - queued_redeliver_s,
                    )
                ).all()
                if queue_empty
                else []
            )
            if stale:
                session.execute(update(JobRow).where(JobRow.id.in_(stale)).values(updated_at=now))
                again.extend(stale)
        return again

    def lapsed_cleanups(self, limit: int = 100) -> list[tuple[str, str, str]]:
        """(job id, knowledge base, file) of cancelled or failed jobs whose worker stopped
        before removing the points it had indexed.

        A job cancelled (or superseded) while running keeps its lease until its worker has
        dropped its generation of points and called :meth:`release_lease`. If the worker is
        killed first, nothing else would ever remove those points (the next upload's swap
        only drops generations that exist when it swaps), so once the lease lapses the
        sweeper drops them.
        """
        now = time.time()
        finished = [JobState.CANCELLED.value, JobState.FAILED.value]
        with self._session(write=False) as session:
            rows = session.execute(
                select(JobRow.id, KnowledgeBaseRow.name, JobRow.file_name)
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == JobRow.kb_id)
                .where(JobRow.state.in_(finished), JobRow.lease_until > 0, JobRow.lease_until < now)
                .order_by(JobRow.lease_until)
                .limit(limit)
            ).all()
        return [(job_id, kb, file_name) for job_id, kb, file_name in rows]

    def release_lease(self, job_id: str) -> None:
        """A finished job's leftovers are gone: nothing for the sweeper to clean up."""
        with self._session(write=True) as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.not_in(_ACTIVE))
                .values(lease_until=0.0),
                execution_options=_NO_SYNC,
            )

    def advance(self, job_id: str, state: JobState, progress: float) -> bool:
        """Move a running job on; False when it was cancelled or deleted meanwhile (stop work)."""
        return self._transition(job_id, {"state": state.value, "progress": progress}, {"state": state.value})

    def set_progress(self, job_id: str, progress: float) -> bool:
        return self._transition(job_id, {"progress": progress}, {})

    def finish_job(
        self, job_id: str, chunks: int, embed_model: str = "", swap: Callable[[], None] | None = None
    ) -> bool:
        """Mark success and give the file its chunk count; False when the job lost ownership.

        ``swap`` (drop the file's previous points) runs inside this transaction, holding the
        file's row, once the job is known to still own the file: a superseding upload or a
        cancel can then neither slip in between the check and the delete (which would remove
        the newer job's points) nor leave the count unwritten after it. If it raises, nothing
        is recorded.
        """
        with self._session(write=True) as session:
            self._lock_file_of(session, job_id)
            row = session.execute(
                select(JobRow.kb_id, JobRow.file_name, JobRow.state).where(JobRow.id == job_id)
            ).first()
            if row is None or row.state not in _ACTIVE:
                return False
            owner = session.scalar(select(FileRow.id).where(FileRow.job_id == job_id))
            if owner is None:
                return False
            # The file's first job ever has no other generation to drop: skip the call (and
            # holding the write lock through it), the common case of a bulk import.
            earlier = session.scalar(
                select(JobRow.id)
                .where(JobRow.kb_id == row.kb_id, JobRow.file_name == row.file_name, JobRow.id != job_id)
                .limit(1)
            )
            if swap is not None and earlier is not None:
                swap()
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE))
                .values(
                    state=JobState.SUCCEEDED.value,
                    progress=1.0,
                    chunks=chunks,
                    error="",
                    lease_until=0.0,
                    updated_at=time.time(),
                ),
                execution_options=_NO_SYNC,
            )
            if changed.rowcount == 0:
                return False
            self._file_state(session, job_id, state=JobState.SUCCEEDED.value, chunks=chunks, error="")
            if embed_model:
                session.execute(
                    update(KnowledgeBaseRow)
                    .where(KnowledgeBaseRow.id == row.kb_id, KnowledgeBaseRow.embed_model == "")
                    .values(embed_model=embed_model),
                    execution_options=_NO_SYNC,
                )
            return True

    def fail_job(self, job_id: str, error: str, chunks_left: int | None = None) -> bool:
        """Mark failure with its reason on the job and its file.

        ``chunks_left`` is how many of the file's points are still indexed when the failure
        came after the old ones were deleted, so the file's count keeps matching the index.
        """
        file_values: dict[str, Any] = {"state": JobState.FAILED.value, "error": error}
        if chunks_left is not None:
            file_values["chunks"] = chunks_left
        return self._transition(job_id, {"state": JobState.FAILED.value, "error": error}, file_values)

    def requeue_waiting(self, job_id: str, error: str, waiting_for: str, retry_at: float) -> bool:
        """Put a job back to QUEUED to wait for ``waiting_for`` until ``retry_at``, keeping the
        reason visible; False when it was cancelled meanwhile (no retry must follow)."""
        return self._transition(
            job_id,
            {
                "state": JobState.QUEUED.value,
                "progress": 0.0,
                "error": error,
                "lease_until": 0.0,
                "retries": JobRow.retries + 1,
                "retry_at": retry_at,
                "waiting_for": waiting_for,
                # The first wait starts the give-up window; later ones keep it.
                "waiting_since": case((JobRow.waiting_since > 0, JobRow.waiting_since), else_=time.time()),
            },
            {"state": JobState.QUEUED.value},
        )

    def job_counts(self) -> dict[JobState, int]:
        """Jobs per state, for the queue-depth and jobs-by-state gauges."""
        with self._session(write=False) as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        counts = dict.fromkeys(JobState, 0)
        for state, count in rows:
            counts[JobState(state)] = int(count)
        return counts
