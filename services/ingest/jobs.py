"""The ingest job lifecycle, in one place: state transitions, leases and sweeping of lost jobs.

Both processes use it: the API submits, cancels and (through its sweeper) recovers jobs; the
worker claims them, renews their leases, reports progress and records how they ended.

A job moves QUEUED -> PARSING -> EMBEDDING -> INDEXING -> SUCCEEDED, or to FAILED or
CANCELLED from any active state; a job waiting for an unavailable dependency goes back to
QUEUED with the time of its next try. The API process and the worker write the same rows
concurrently, so every state change the worker makes is a conditional UPDATE (``... WHERE
state IN active``): a job cancelled by a newer upload or a delete can never be flipped back to
succeeded by a worker that was still running it. The file row follows its owning job in the
same transaction, locked first (file, then job, then knowledge base: one lock order, so
PostgreSQL never sees a deadlock).

Crash safety: a worker holding a job renews ``lease_until`` (:class:`LeaseKeeper`); a job in a
running stage whose lease expired belongs to a dead worker (SIGKILL, OOM, lost node), and
:meth:`JobLifecycle.sweep` hands it back to the queue (:func:`sweep_lost_jobs`, run by the API
process). Claims are conditional too (:meth:`JobLifecycle.begin_attempt`), so a redelivered
duplicate message never runs a job twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from celery import Celery
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from services.common.database import rows_matched
from services.ingest.broker import enqueue_ingest, queue_length
from services.ingest.config import IngestSettings
from services.ingest.metrics import JOBS_REPUBLISHED
from services.ingest.migration import TARGET_COLUMNS, Migrations, Target, targets_of
from services.ingest.store.access import FileAccessList
from services.ingest.store.catalog import Catalog
from services.ingest.store.files import file_not_found
from services.ingest.store.records import ACTIVE_STATES, RUNNING_STATES, FileRecord, JobRecord, JobState
from services.ingest.store.tables import NO_SYNC, FileRow, JobRow, KnowledgeBaseRow, file_record, job_record

# Applies a file's acl tokens (second) to its points in each collection (first): retrieve
# SetFileAcl calls.
ApplyAcl = Callable[[list[str], list[str]], None]

log = logging.getLogger("zhiku.ingest.jobs")

# Metadata key of every indexed point naming the job that wrote it (its generation): a job's
# points are told apart from the file's previous ones, swapped in at success, dropped on failure.
GENERATION_KEY = "generation"

_ACTIVE = [state.value for state in ACTIVE_STATES]
_RUNNING = [state.value for state in RUNNING_STATES]


@dataclass(frozen=True)
class Submission:
    """One uploaded file as :meth:`JobLifecycle.submit_files` records it."""

    file_name: str
    size: int
    content_hash: str
    chunk_size: int
    chunk_overlap: int
    splitter: str = "recursive"
    title_enhance: bool = False
    override: bool = False
    parent_chunk_size: int = 0
    access: FileAccessList | None = None
    uploader: str = ""


@dataclass(frozen=True)
class Claim:
    """A job claimed for an attempt, with the acl tokens its file had at the claim and the
    collections its knowledge base indexes uploads into at the claim (two while a migration
    runs; read in the claim's transaction, so no job pays a catalog read of its own)."""

    job: JobRecord
    acl: tuple[str, ...]
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Finish:
    """A job that indexed its file: its chunk count, model, the acl its points carry and the
    collections it wrote them to (see :meth:`JobLifecycle.finish_job`'s ``written``)."""

    job_id: str
    chunks: int
    embed_model: str
    acl: tuple[str, ...]
    written: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress:
    """A running job's progress, and its new stage (None: the same), as the worker reports
    them (see :meth:`JobLifecycle.advance`, :meth:`JobLifecycle.set_progress`)."""

    job_id: str
    progress: float
    stage: JobState | None = None


class JobLifecycle:
    """Every change of a job's state; each method is one short transaction of the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._database = catalog.database

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
        parent_chunk_size: int = 0,
        access: FileAccessList | None = None,
        uploader: str = "",
    ) -> JobRecord:
        """Record one upload (see :meth:`submit_files`)."""
        submission = Submission(
            file_name,
            size,
            content_hash,
            chunk_size,
            chunk_overlap,
            splitter=splitter,
            title_enhance=title_enhance,
            override=override,
            parent_chunk_size=parent_chunk_size,
            access=access,
            uploader=uploader,
        )
        return self.submit_files(kb, [submission], request_id)[0]

    def submit_files(
        self, kb: str, submissions: Sequence[Submission], request_id: str = ""
    ) -> list[JobRecord]:
        """Record uploads, all in one transaction: per file, the file row (new or replaced) and
        a QUEUED job that owns it; the jobs in submission order.

        ``access`` replaces the file's access list (None: a new file is open, a re-upload keeps
        the list); a non-empty ``uploader`` becomes the file's uploader, kept on a restricted
        list. Both are written even when the content is unchanged.

        Content identical to the file's current upload (same hash, its job succeeded or still
        running) is a no-op unless ``override``: the answer is that job, marked ``unchanged``,
        and nothing is queued. Jobs still running for an earlier upload of the same name are
        cancelled, so only the newest content is indexed and the superseded worker cannot
        overwrite the file's state. One transaction for a whole upload: a batch of small files
        costs one commit (on SQLite one write lock and one WAL append), not one per file.
        """
        job_ids = [str(uuid.uuid4()) for _ in submissions]

        def work() -> list[JobRecord]:
            now = time.time()
            with self._database.session(write=True) as session:
                kb_id = self._database.kb_row(session, kb).id
                # Every named file row in one statement; FOR UPDATE serialises concurrent
                # uploads of one name on PostgreSQL (SQLite serialises writers already).
                names = [submission.file_name for submission in submissions]
                existing = {
                    row.name: row
                    for row in session.scalars(
                        select(FileRow)
                        .where(FileRow.kb_id == kb_id, FileRow.name.in_(names))
                        .with_for_update()
                    )
                }
                jobs = [
                    self._submit_one(
                        session,
                        kb,
                        kb_id,
                        existing.get(submission.file_name),
                        submission,
                        job_id,
                        request_id,
                        now,
                    )
                    for submission, job_id in zip(submissions, job_ids, strict=True)
                ]
                session.flush()  # the new rows in one round of INSERTs, not one per file
                return [job if isinstance(job, JobRecord) else job_record(kb, job) for job in jobs]

        return self._database.retry_on_conflict(work)

    def _submit_one(
        self,
        session: Session,
        kb: str,
        kb_id: int,
        file_row: FileRow | None,
        submission: Submission,
        job_id: str,
        request_id: str,
        now: float,
    ) -> JobRecord | JobRow:
        """One file of :meth:`submit_files`: the unchanged answer, or the new job's row (its
        record is made once the rows are flushed)."""
        file_name, access, uploader = submission.file_name, submission.access, submission.uploader
        if file_row is not None:
            _set_access(file_row, access, uploader)
        if (
            file_row is not None
            and not submission.override
            and file_row.content_hash == submission.content_hash
        ):
            current = session.get(JobRow, file_row.job_id)
            if current is not None and current.state not in (
                JobState.FAILED.value,
                JobState.CANCELLED.value,
            ):
                return job_record(kb, current, unchanged=True)
        if file_row is None:
            file_row = FileRow(kb_id=kb_id, name=file_name, chunks=0, created_at=now)
            _set_access(file_row, access, uploader)
            session.add(file_row)
        else:
            self._cancel_active(session, kb_id, file_name, f"superseded by job {job_id}")
        file_row.size = submission.size
        file_row.content_hash = submission.content_hash
        file_row.state = JobState.QUEUED.value
        file_row.error = ""
        file_row.job_id = job_id
        file_row.updated_at = now
        job = JobRow(
            id=job_id,
            kb_id=kb_id,
            file_name=file_name,
            content_hash=submission.content_hash,
            state=JobState.QUEUED.value,
            progress=0.0,
            chunks=0,
            error="",
            attempts=0,
            chunk_size=submission.chunk_size,
            chunk_overlap=submission.chunk_overlap,
            request_id=request_id,
            created_at=now,
            updated_at=now,
            splitter=submission.splitter,
            title_enhance=submission.title_enhance,
            parent_chunk_size=submission.parent_chunk_size,
            lease_until=0.0,
            retries=0,
            retry_at=0.0,
            waiting_for="",
            waiting_since=0.0,
        )
        session.add(job)
        return job

    def set_access(
        self, kb: str, file_name: str, access: FileAccessList | None, apply: ApplyAcl
    ) -> FileRecord:
        """Write the file's access list (None: keep it) and ``apply`` its tokens to the file's
        points, in every collection that holds them (a migration's shadow too, see
        :meth:`Migrations.acl_collections`), inside the same transaction, holding the file's row.

        Holding the row orders this against other changes of the list and against a job's
        :meth:`finish_job`, which re-applies the list if it changed while the job indexed; so
        whatever interleaving, the points end with the catalog's list. If ``apply`` fails
        (retrieve down), nothing is recorded.
        """
        with self._database.session(write=True) as session:
            kb_id = self._database.kb_row(session, kb).id
            row = session.scalar(
                select(FileRow).where(FileRow.kb_id == kb_id, FileRow.name == file_name).with_for_update()
            )
            if row is None:
                raise file_not_found(kb, file_name)
            if access is not None:
                _set_access(row, access, "")
                row.updated_at = time.time()
            # Read holding the file's row: a migration's start, switch or abandon locks its
            # files' rows first, so the collections cannot change until this commits.
            apply(Migrations.acl_collections(session, kb_id), FileAccessList.from_json(row.access).tokens())
            session.flush()
            return file_record(kb, row)

    @staticmethod
    def _cancel_active(session: Session, kb_id: int, file_name: str, reason: str) -> None:
        session.execute(
            update(JobRow)
            .where(JobRow.kb_id == kb_id, JobRow.file_name == file_name, JobRow.state.in_(_ACTIVE))
            .values(state=JobState.CANCELLED.value, error=reason, updated_at=time.time())
        )

    def delete_file(self, kb: str, file_name: str) -> None:
        """Forget a file; its queued or running jobs are cancelled in the same transaction."""
        with self._database.session(write=True) as session:
            kb_id = self._database.kb_row(session, kb).id
            deleted = session.execute(
                delete(FileRow).where(FileRow.kb_id == kb_id, FileRow.name == file_name)
            )
            if rows_matched(deleted) == 0:
                raise file_not_found(kb, file_name)
            self._cancel_active(session, kb_id, file_name, "file was deleted")

    def cancel_job(self, job_id: str, reason: str = "cancelled by request") -> JobRecord:
        """Cancel a queued or running job (its worker stops at its next step); a finished job
        is returned unchanged. The file keeps the points of its last finished upload."""
        with self._database.session(write=True) as session:
            self._lock_file_of(session, job_id)
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE))
                # A running job keeps its lease: released once its worker removed what it
                # indexed, or, if that worker dies first, by the sweeper (lapsed_cleanups).
                .values(state=JobState.CANCELLED.value, error=reason, updated_at=time.time())
            )
            if rows_matched(changed):
                self._file_state(session, job_id, state=JobState.CANCELLED.value, error=reason)
        return self.catalog.jobs.get(job_id)

    def begin_attempt(self, job_id: str, lease_s: float = 60.0) -> JobRecord | None:
        """Claim a job for one more attempt, leased for ``lease_s``; None when it is gone,
        finished, or held by another live worker (a duplicate delivery of its message)."""
        return self.begin_attempts([job_id], lease_s)[0]

    def begin_attempts(self, job_ids: Sequence[str], lease_s: float = 60.0) -> list[JobRecord | None]:
        """Claim several jobs in one transaction; each claim as :meth:`begin_attempt`'s."""
        return [None if claim is None else claim.job for claim in self.claim_jobs(job_ids, lease_s)]

    def claim_jobs(self, job_ids: Sequence[str], lease_s: float = 60.0) -> list[Claim | None]:
        """Claim several jobs in one transaction (the worker's job threads, coalesced), in a
        few set-wise statements for all of them, in order; each claim as
        :meth:`begin_attempt`'s, with the acl tokens of the job's file as of the claim (the
        ones its points are written with; :meth:`finish_first_jobs` sees a later change).
        Locks as everywhere: the files first, then the jobs."""
        with self._database.session(write=True) as session:
            return self._claim_jobs_in(session, job_ids, lease_s)

    def claim_and_finish(
        self,
        job_ids: Sequence[str],
        lease_s: float,
        finishes: Sequence[Finish],
        reports: Sequence[Progress] = (),
    ) -> tuple[list[Claim | None], list[bool | None], list[bool]]:
        """:meth:`finish_first_jobs`, :meth:`claim_jobs` and :meth:`report_progress`, in one
        transaction: the worker's catalog writes of a moment, whichever jobs they are for,
        take one commit."""
        with self._database.session(write=True) as session:
            finished = self._finish_first_in(session, finishes) if finishes else []
            claimed = self._claim_jobs_in(session, job_ids, lease_s) if job_ids else []
            reported = self._report_in(session, reports) if reports else []
            return claimed, finished, reported

    def report_progress(self, reports: Sequence[Progress]) -> list[bool]:
        """Several jobs' progress (and stages) in one transaction, each as :meth:`advance` or
        :meth:`set_progress` would write it; for each, whether the job is still active. The
        worker's jobs wait on the embedder together, so their reports come due together: one
        commit each was a fifth of the worker's time with a slow embedder."""
        with self._database.session(write=True) as session:
            return self._report_in(session, reports)

    def _report_in(self, session: Session, reports: Sequence[Progress]) -> list[bool]:
        moving = [report.job_id for report in reports if report.stage is not None]
        if moving:
            self._lock_files_of(session, moving)  # files first, then jobs
        ids = list(dict.fromkeys(report.job_id for report in reports))
        active = set(
            session.scalars(
                select(JobRow.id).where(JobRow.id.in_(ids), JobRow.state.in_(_ACTIVE)).with_for_update()
            )
        )
        latest = {report.job_id: report for report in reports if report.job_id in active}
        if latest:
            now = time.time()
            stages = {
                job_id: report.stage.value for job_id, report in latest.items() if report.stage is not None
            }
            values: dict[str, Any] = {
                "progress": case(
                    {job_id: report.progress for job_id, report in latest.items()}, value=JobRow.id
                ),
                "updated_at": now,
            }
            if stages:
                values["state"] = case(stages, value=JobRow.id, else_=JobRow.state)
            session.execute(
                update(JobRow).where(JobRow.id.in_(list(latest))).values(**values), execution_options=NO_SYNC
            )
            if stages:
                session.execute(
                    update(FileRow)
                    .where(FileRow.job_id.in_(list(stages)))
                    .values(state=case(stages, value=FileRow.job_id), updated_at=now),
                    execution_options=NO_SYNC,
                )
        return [report.job_id in active for report in reports]

    def _claim_jobs_in(self, session: Session, job_ids: Sequence[str], lease_s: float) -> list[Claim | None]:
        ids = list(dict.fromkeys(job_ids))
        access = self._lock_files_of(session, ids)
        rows = {
            row.id: row
            for row in session.execute(
                select(*JobRow.__table__.columns, KnowledgeBaseRow.name.label("kb_name"), *TARGET_COLUMNS)
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == JobRow.kb_id)
                .where(JobRow.id.in_(ids))
                .with_for_update(of=JobRow)
            )
        }
        now = time.time()
        claimable = [
            job_id
            for job_id in ids
            if (row := rows.get(job_id)) is not None
            and not JobState(row.state).terminal
            and (row.state == JobState.QUEUED.value or (row.lease_until or 0.0) <= now)
        ]
        claim = {
            "state": JobState.PARSING.value,
            "progress": 0.0,
            "error": "",
            "lease_until": now + lease_s,
            "retry_at": 0.0,
            "updated_at": now,
        }
        if claimable:
            session.execute(
                update(JobRow).where(JobRow.id.in_(claimable)).values(attempts=JobRow.attempts + 1, **claim),
                execution_options=NO_SYNC,
            )
            session.execute(
                update(FileRow)
                .where(FileRow.job_id.in_(claimable))
                .values(state=JobState.PARSING.value, updated_at=now),
                execution_options=NO_SYNC,
            )
        claims: dict[str, Claim] = {}
        for job_id in claimable:
            row = rows[job_id]
            values = {**row._asdict(), **claim, "attempts": row.attempts + 1}
            tokens = tuple(FileAccessList.from_json(access.get(job_id)).tokens())
            targets = targets_of(
                row.kb_collection or row.kb_name,
                row.kb_embed_model,
                row.kb_shadow_collection,
                row.kb_shadow_model,
            )
            claims[job_id] = Claim(job_record(row.kb_name, SimpleNamespace(**values)), tokens, tuple(targets))
        return [claims.get(job_id) for job_id in job_ids]

    @staticmethod
    def _lock_file_of(session: Session, job_id: str) -> None:
        """Lock the file row a job owns before touching the job: one lock order everywhere
        (file, then job, then knowledge base), so PostgreSQL never sees a deadlock."""
        session.execute(select(FileRow.id).where(FileRow.job_id == job_id).with_for_update())

    @staticmethod
    def _lock_files_of(session: Session, job_ids: Sequence[str]) -> dict[str, str]:
        """Lock the file rows that the jobs own, files first, then jobs: the one lock order (see
        :meth:`_lock_file_of`); each owning job's id -> its file's access list (JSON). A job
        whose file no longer names it is missing: the job lost its file."""
        return {
            row.job_id: row.access
            for row in session.execute(
                select(FileRow.job_id, FileRow.access).where(FileRow.job_id.in_(job_ids)).with_for_update()
            )
        }

    @staticmethod
    def _file_state(session: Session, job_id: str, **values: Any) -> None:
        session.execute(
            update(FileRow).where(FileRow.job_id == job_id).values(updated_at=time.time(), **values),
            execution_options=NO_SYNC,
        )

    def _transition(self, job_id: str, job_values: dict[str, Any], file_values: dict[str, Any]) -> bool:
        with self._database.session(write=True) as session:
            if file_values:
                self._lock_file_of(session, job_id)
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE))
                .values(updated_at=time.time(), **job_values),
                execution_options=NO_SYNC,
            )
            if rows_matched(changed) == 0:
                return False
            if file_values:
                self._file_state(session, job_id, **file_values)
            return True

    def renew_leases(self, job_ids: Sequence[str], lease_s: float) -> set[str]:
        """Extend the leases of the running jobs among ``job_ids`` in one transaction (a
        worker's jobs in flight, every ``lease_s / 4``); the ids that are still running.
        Their files are locked first: the one lock order (see :meth:`_lock_file_of`)."""
        with self._database.session(write=True) as session:
            self._lock_files_of(session, job_ids)
            running = set(
                session.scalars(
                    select(JobRow.id)
                    .where(JobRow.id.in_(list(job_ids)), JobRow.state.in_(_RUNNING))
                    .with_for_update()
                )
            )
            if running:
                session.execute(
                    update(JobRow)
                    .where(JobRow.id.in_(list(running)))
                    .values(lease_until=time.time() + lease_s),
                    execution_options=NO_SYNC,
                )
            return running

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
        with self._database.session(write=True) as session:
            expired = session.scalars(
                select(JobRow).where(JobRow.state.in_(_RUNNING), JobRow.lease_until < now).with_for_update()
            ).all()
            for row in expired:
                lost = f"the worker running attempt {row.attempts} stopped answering (killed or crashed)"
                values: dict[str, str | float]
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
        with self._database.session(write=False) as session:
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
        with self._database.session(write=True) as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.not_in(_ACTIVE))
                .values(lease_until=0.0),
                execution_options=NO_SYNC,
            )

    def advance(self, job_id: str, state: JobState, progress: float) -> bool:
        """Move a running job on; False when it was cancelled or deleted meanwhile (stop work)."""
        return self._transition(job_id, {"state": state.value, "progress": progress}, {"state": state.value})

    def set_progress(self, job_id: str, progress: float) -> bool:
        return self._transition(job_id, {"progress": progress}, {})

    def finish_job(
        self,
        job_id: str,
        chunks: int,
        embed_model: str = "",
        swap: Callable[[list[str]], None] | None = None,
        written: list[str] | None = None,
        acl: Sequence[str] | None = None,
        reapply: ApplyAcl | None = None,
    ) -> bool:
        """Mark success and give the file its chunk count; False when the job lost ownership.

        ``swap`` (drop the file's previous points in the given collections) runs inside this
        transaction, holding the file's row, once the job is known to still own the file: a
        superseding upload or a cancel can then neither slip in between the check and the
        delete (which would remove the newer job's points) nor leave the count unwritten
        after it. If it raises, nothing is recorded. ``written`` are the collections the job
        indexed into: StaleTargets when the knowledge base's active one is not among them (a
        migration switched meanwhile; see services.ingest.migration). Likewise ``reapply``:
        when the file's access list changed since the job read it (``acl``, the tokens its
        points carry), the current tokens are applied to those collections before the job is
        recorded as done (see :meth:`set_access`).
        """
        with self._database.session(write=True) as session:
            self._lock_file_of(session, job_id)
            row = session.execute(
                select(JobRow.kb_id, JobRow.file_name, JobRow.state).where(JobRow.id == job_id)
            ).first()
            if row is None or row.state not in _ACTIVE:
                return False
            owner = session.scalar(select(FileRow.id).where(FileRow.job_id == job_id))
            if owner is None:
                return False
            collections = (
                Migrations.check_finish(session, row.kb_id, job_id, written, chunks) if written else []
            )
            # The file's first job ever has no other generation to drop: skip the call (and
            # holding the write lock through it), the common case of a bulk import.
            earlier = session.scalar(
                select(JobRow.id)
                .where(JobRow.kb_id == row.kb_id, JobRow.file_name == row.file_name, JobRow.id != job_id)
                .limit(1)
            )
            if swap is not None and earlier is not None:
                swap(collections)
            if reapply is not None:
                stored = session.scalar(select(FileRow.access).where(FileRow.id == owner))
                current = FileAccessList.from_json(stored).tokens()
                if acl is None or current != list(acl):
                    reapply(collections, current)
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE))
                .values(_succeeded(chunks, time.time())),
                execution_options=NO_SYNC,
            )
            if rows_matched(changed) == 0:
                return False
            self._file_state(session, job_id, state=JobState.SUCCEEDED.value, chunks=chunks, error="")
            if embed_model:
                session.execute(
                    update(KnowledgeBaseRow)
                    .where(KnowledgeBaseRow.id == row.kb_id, KnowledgeBaseRow.embed_model == "")
                    .values(embed_model=embed_model),
                    execution_options=NO_SYNC,
                )
            return True

    def finish_first_jobs(self, finishes: Sequence[Finish]) -> list[bool | None]:
        """Record the success of several jobs in one transaction (the worker's job threads,
        coalesced), in a few set-wise statements, each as :meth:`finish_job` would: True when
        recorded, False when the job lost ownership. None for a job that needs
        :meth:`finish_job` itself, left untouched here: its file has other generations to
        drop, or its access list changed since the job read it (both are calls to the
        retrieve service made holding the file's row, one job at a time). A bulk import's
        jobs are all first jobs of unchanged files.

        Migrations (services.ingest.migration) keep their guarantees by the same fallback:
        None too for a job whose ``written`` is empty or lacks its knowledge base's active
        collection (a switch happened meanwhile: :meth:`finish_job` raises StaleTargets and the
        job is redone), and for every job of a knowledge base whose migration is running (the
        file's shadow generation and count are recorded by :meth:`Migrations.check_finish`, so
        the migration neither copies a file already in the shadow nor misses one that is
        not). Only a job whose knowledge base has no shadow and whose active collection it
        wrote is finished here. The knowledge bases' rows are read shared, after the files
        and jobs (the one lock order), as check_finish reads them: a start or switch waits
        for this commit or this read sees it."""
        with self._database.session(write=True) as session:
            return self._finish_first_in(session, finishes)

    def _finish_first_in(self, session: Session, finishes: Sequence[Finish]) -> list[bool | None]:
        ids = [finish.job_id for finish in finishes]
        owned = self._lock_files_of(session, ids)
        jobs = {
            row.id: row
            for row in session.execute(
                select(JobRow.id, JobRow.kb_id, JobRow.file_name, JobRow.state).where(JobRow.id.in_(ids))
            )
        }
        active = [job for job in jobs.values() if job.state in _ACTIVE and job.id in owned]
        # A file with more than one job (this one and an earlier) has a generation to drop.
        counts = {
            (row.kb_id, row.file_name): row.n
            for row in session.execute(
                select(JobRow.kb_id, JobRow.file_name, func.count().label("n"))
                .where(
                    JobRow.kb_id.in_(list({job.kb_id for job in active})),
                    JobRow.file_name.in_(list({job.file_name for job in active})),
                )
                .group_by(JobRow.kb_id, JobRow.file_name)
            )
        }
        # Where each knowledge base's uploads go now: (active collection, shadow or "").
        collections = {
            row.id: (row.collection or row.name, row.shadow_collection)
            for row in session.execute(
                select(
                    KnowledgeBaseRow.id,
                    KnowledgeBaseRow.name,
                    KnowledgeBaseRow.collection,
                    KnowledgeBaseRow.shadow_collection,
                )
                .where(KnowledgeBaseRow.id.in_(list({job.kb_id for job in active})))
                .with_for_update(read=True)
            )
        }
        results: dict[str, bool | None] = {}
        done: dict[str, Finish] = {}
        for finish in finishes:
            job = jobs.get(finish.job_id)
            if job is None or job not in active:
                results[finish.job_id] = False
            elif (
                counts.get((job.kb_id, job.file_name), 1) > 1
                or FileAccessList.from_json(owned[finish.job_id]).tokens() != list(finish.acl)
                or not _plain_finish(collections.get(job.kb_id), finish.written)
            ):
                results[finish.job_id] = None
            else:
                results[finish.job_id] = True
                done[finish.job_id] = finish
        if done:
            now = time.time()
            chunks = case({job_id: finish.chunks for job_id, finish in done.items()}, value=JobRow.id)
            session.execute(
                update(JobRow)
                .where(JobRow.id.in_(list(done)), JobRow.state.in_(_ACTIVE))
                .values(_succeeded(chunks, now)),
                execution_options=NO_SYNC,
            )
            file_chunks = case(
                {job_id: finish.chunks for job_id, finish in done.items()}, value=FileRow.job_id
            )
            session.execute(
                update(FileRow)
                .where(FileRow.job_id.in_(list(done)))
                .values(state=JobState.SUCCEEDED.value, chunks=file_chunks, error="", updated_at=now),
                execution_options=NO_SYNC,
            )
            models = {jobs[job_id].kb_id: finish.embed_model for job_id, finish in done.items()}
            for kb_id, model in models.items():
                if model:
                    session.execute(
                        update(KnowledgeBaseRow)
                        .where(KnowledgeBaseRow.id == kb_id, KnowledgeBaseRow.embed_model == "")
                        .values(embed_model=model),
                        execution_options=NO_SYNC,
                    )
        return [results[finish.job_id] for finish in finishes]

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

    def wait_or_give_up(
        self, job: JobRecord, error: str, dependency: str, delay_s: float, give_up_s: float
    ) -> JobState:
        """After an attempt of ``job`` met an unavailable ``dependency``: QUEUED again to wait
        ``delay_s`` for its next try, unless it has already waited ``give_up_s`` since its first
        wait (then FAILED, saying for how long); CANCELLED when it was cancelled meanwhile."""
        now = time.time()
        waited = now - job.waiting_since if job.waiting_since else 0.0
        if waited >= give_up_s:
            spent = f" after {_duration(waited)}" if waited else ""
            reason = f"{error} (gave up waiting for {dependency}{spent}, {job.attempts} attempts)"
            log.warning("job %s failed: %s", job.id, reason)
            return JobState.FAILED if self.fail_job(job.id, reason) else JobState.CANCELLED
        if not self.requeue_waiting(job.id, error, dependency, now + delay_s):
            return JobState.CANCELLED
        return JobState.QUEUED


def _plain_finish(collections: tuple[str, str] | None, written: Sequence[str]) -> bool:
    """Whether a job that wrote to ``written`` may finish in the set-wise path: its knowledge
    base (``collections``: active, shadow) runs no migration and it wrote the active one."""
    if collections is None or not written:
        return False
    active, shadow = collections
    return not shadow and active in written


def _set_access(row: FileRow, access: FileAccessList | None, uploader: str) -> None:
    """A file row's access list (None: keep it) and uploader (empty: keep it); a restricted
    list always holds the uploader."""
    if uploader:
        row.uploader = uploader
    kept = FileAccessList.from_json(row.access) if access is None else access
    row.access = kept.with_uploader(row.uploader or "").to_json()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@dataclass(frozen=True)
class Lease:
    """A worker's request to renew the leases of its jobs in flight (see :class:`LeaseKeeper`)."""

    job_ids: tuple[str, ...]


class LeaseKeeper:
    """Renews the leases of the jobs a worker runs, from one daemon thread, until closed.

    A SIGKILLed worker takes this thread with it, so the leases run out and the sweeper
    re-queues the jobs; a live worker busy in one long Embed call keeps its jobs. One thread
    and one ``renew`` call a round for every job held: a thread of its own per job cost a
    start and a join on every file, and 48 jobs in flight took 48 commits a round.
    ``renew`` answers the ids still running; the others (finished or cancelled meanwhile)
    are no longer renewed.
    """

    def __init__(self, renew: Callable[[list[str]], set[str]], lease_s: float) -> None:
        self._renew = renew
        self._round_s = lease_s / 4
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-keeper", daemon=True)
        self._thread.start()

    @contextmanager
    def hold(self, job_id: str) -> Iterator[None]:
        """Renew ``job_id``'s lease while the block runs (its claim set the first one)."""
        with self._lock:
            self._held.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(job_id)

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def _beat(self) -> None:
        while not self._stop.wait(self._round_s):
            job_ids = sorted(self.held())
            if not job_ids:
                continue
            try:
                running = self._renew(job_ids)
            except Exception as error:  # the thread must live on: every job's lease rides on it
                log.warning("lease renewal of %d jobs failed: %r", len(job_ids), error)
                continue
            with self._lock:
                self._held -= set(job_ids) - running  # nothing left to hold for these

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# Removes the points one job indexed (kb, file name, job id) and nothing else of the file.
DropGeneration = Callable[[str, str, str], Awaitable[None]]


async def sweep_lost_jobs(
    lifecycle: JobLifecycle, celery: Celery, settings: IngestSettings, drop_generation: DropGeneration
) -> None:
    """Re-queue jobs whose worker died (lease lapsed), re-publish long-queued ones, and remove
    the points of cancelled or failed jobs whose worker died before removing them; forever,
    every ``sweep_interval_s``.

    Neither broker gives a SIGKILLed worker's task back in time: the SQL transport deleted the
    message when the worker fetched it, and Redis waits for its visibility timeout (1 h). The
    catalog's leases say which jobs lost their worker; publishing again is safe because only
    one delivery can claim a job.
    """
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            waiting = await asyncio.to_thread(queue_length, celery)
            job_ids = await asyncio.to_thread(
                lifecycle.sweep, settings.max_attempts, settings.queued_redeliver_s, waiting == 0
            )
            for job_id in job_ids:
                await asyncio.to_thread(enqueue_ingest, celery, job_id)
                JOBS_REPUBLISHED.inc()
                log.warning("job %s lost its worker or its message; published again", job_id)
            for job_id, kb, file_name in await asyncio.to_thread(lifecycle.lapsed_cleanups):
                await drop_generation(kb, file_name, job_id)
                await asyncio.to_thread(lifecycle.release_lease, job_id)
                log.warning("job %s ended without removing what it indexed; removed it", job_id)
        except Exception as error:  # the sweeper must outlive a database or broker hiccup
            log.warning("sweeping lost jobs failed: %s", error)


def _succeeded(chunks: object, now: float) -> dict[str, object]:
    """A job row's values once it succeeded (``chunks``: a count or a per-row CASE)."""
    return {
        "state": JobState.SUCCEEDED.value,
        "progress": 1.0,
        "chunks": chunks,
        "error": "",
        "lease_until": 0.0,
        "updated_at": now,
    }
