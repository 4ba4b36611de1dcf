"""Sources in the catalog: their settings, the files each owns, and the history of their syncs.

A source owns the files its syncs created (``source_items``); a later sync re-indexes or
removes only those, so uploads and other sources' files in the same knowledge base are never
touched. A sync is a row of ``sync_runs`` moving queued -> running -> succeeded | failed, with
its report (added, updated, removed, failed with reasons) as JSON. Scheduled syncs are claimed
with a conditional UPDATE of ``next_sync_at``, so two API replicas never start the same one.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.database import rows_matched
from services.common.errors import AlreadyExists, NotFound
from services.ingest.store.database import CatalogDatabase
from services.ingest.store.tables import KnowledgeBaseRow, SourceItemRow, SourceRow, SyncRunRow
from zhiku.v1 import ingest_pb2

ACTIVE_RUN_STATES = ("queued", "running")
# A sync still "running" after this long lost its worker: it no longer blocks the next one.
STALE_RUN_S = 3600.0


@dataclass
class SourceRecord:
    id: str
    knowledge_base: str
    name: str
    kind: str
    config: dict[str, Any]
    secret: str
    interval_s: int
    next_sync_at: float
    created_at: float


@dataclass
class SyncReportRecord:
    id: str
    source: str
    knowledge_base: str
    state: str
    trigger: str
    error: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unchanged: int = 0
    job_ids: list[str] = field(default_factory=list)

    def lists(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "failed": [list(failure) for failure in self.failed],
            "unchanged": self.unchanged,
            "job_ids": self.job_ids,
        }

    def to_pb(self) -> ingest_pb2.SyncReport:
        return ingest_pb2.SyncReport(
            id=self.id,
            source=self.source,
            knowledge_base=self.knowledge_base,
            state=self.state,
            added=self.added,
            updated=self.updated,
            removed=self.removed,
            failed=[ingest_pb2.SyncFailure(item=item, reason=reason) for item, reason in self.failed],
            unchanged=self.unchanged,
            error=self.error,
            trigger=self.trigger,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            job_ids=self.job_ids,
        )


def source_not_found(kb: str, name: str) -> NotFound:
    return NotFound(f"source {name!r} does not exist in knowledge base {kb!r}")


def _source(kb: str, row: SourceRow) -> SourceRecord:
    return SourceRecord(
        id=row.id,
        knowledge_base=kb,
        name=row.name,
        kind=row.kind,
        config=json.loads(row.config or "{}"),
        secret=row.secret or "",
        interval_s=row.interval_s,
        next_sync_at=row.next_sync_at,
        created_at=row.created_at,
    )


def _report(kb: str, source: str, row: SyncRunRow) -> SyncReportRecord:
    lists = json.loads(row.report or "{}")
    return SyncReportRecord(
        id=row.id,
        source=source,
        knowledge_base=kb,
        state=row.state,
        trigger=row.trigger,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        added=lists.get("added", []),
        updated=lists.get("updated", []),
        removed=lists.get("removed", []),
        failed=[(item, reason) for item, reason in lists.get("failed", [])],
        unchanged=lists.get("unchanged", 0),
        job_ids=lists.get("job_ids", []),
    )


def delete_sources_of(session: Session, kb_id: int) -> None:
    """Remove a knowledge base's sources, their items and runs (SQLite does not cascade)."""
    source_ids = select(SourceRow.id).where(SourceRow.kb_id == kb_id)
    session.execute(delete(SyncRunRow).where(SyncRunRow.source_id.in_(source_ids)))
    session.execute(delete(SourceItemRow).where(SourceItemRow.kb_id == kb_id))
    session.execute(delete(SourceRow).where(SourceRow.kb_id == kb_id))


class SourceRepository:
    def __init__(self, database: CatalogDatabase) -> None:
        self.database = database

    # -- sources ---------------------------------------------------------------------------

    def create(
        self, kb: str, name: str, kind: str, config: dict[str, Any], secret: str, interval_s: int
    ) -> SourceRecord:
        now = time.time()
        try:
            with self.database.session(write=True) as session:
                row = SourceRow(
                    id=str(uuid.uuid4()),
                    kb_id=self.database.kb_row(session, kb).id,
                    name=name,
                    kind=kind,
                    config=json.dumps(config),
                    secret=secret,
                    interval_s=interval_s,
                    next_sync_at=now + interval_s if interval_s else 0.0,
                    created_at=now,
                )
                session.add(row)
                session.flush()
                return _source(kb, row)
        except IntegrityError:
            raise AlreadyExists(f"source {name!r} already exists in knowledge base {kb!r}") from None

    def _row(self, session: Session, kb: str, name: str) -> SourceRow:
        kb_id = self.database.kb_row(session, kb).id
        row = session.scalar(select(SourceRow).where(SourceRow.kb_id == kb_id, SourceRow.name == name))
        if row is None:
            raise source_not_found(kb, name)
        return row

    def get(self, kb: str, name: str) -> SourceRecord:
        with self.database.session(write=False) as session:
            return _source(kb, self._row(session, kb, name))

    def get_by_id(self, source_id: str) -> SourceRecord | None:
        with self.database.session(write=False) as session:
            found = session.execute(
                select(SourceRow, KnowledgeBaseRow.name)
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == SourceRow.kb_id)
                .where(SourceRow.id == source_id)
            ).first()
            return _source(found[1], found[0]) if found is not None else None

    def list(self, kb: str) -> list[SourceRecord]:
        with self.database.session(write=False) as session:
            kb_id = self.database.kb_row(session, kb).id
            rows = session.scalars(select(SourceRow).where(SourceRow.kb_id == kb_id).order_by(SourceRow.name))
            return [_source(kb, row) for row in rows]

    def delete(self, kb: str, name: str) -> None:
        """Forget the source and its history; the files it synced stay, as if uploaded."""
        with self.database.session(write=True) as session:
            row = self._row(session, kb, name)
            session.execute(delete(SyncRunRow).where(SyncRunRow.source_id == row.id))
            session.execute(delete(SourceItemRow).where(SourceItemRow.source_id == row.id))
            session.execute(delete(SourceRow).where(SourceRow.id == row.id))

    # -- syncs -----------------------------------------------------------------------------

    @staticmethod
    def _active_run(session: Session, source_id: str) -> SyncRunRow | None:
        stale_before = time.time() - STALE_RUN_S
        return session.scalar(
            select(SyncRunRow)
            .where(
                SyncRunRow.source_id == source_id,
                SyncRunRow.state.in_(ACTIVE_RUN_STATES),
                (SyncRunRow.state == "queued") | (SyncRunRow.started_at > stale_before),
            )
            .limit(1)
        )

    @staticmethod
    def _new_run(session: Session, source_id: str, trigger: str) -> SyncRunRow:
        run = SyncRunRow(
            id=str(uuid.uuid4()),
            source_id=source_id,
            state="queued",
            trigger=trigger,
            report="{}",
            error="",
            created_at=time.time(),
            started_at=0.0,
            finished_at=0.0,
        )
        session.add(run)
        session.flush()
        return run

    def request_sync(self, kb: str, name: str) -> tuple[SyncReportRecord, bool]:
        """A queued sync of the source, and whether it is new (False: one was already pending)."""
        with self.database.session(write=True) as session:
            source = self._row(session, kb, name)
            active = self._active_run(session, source.id)
            if active is not None:
                return _report(kb, name, active), False
            return _report(kb, name, self._new_run(session, source.id, "manual")), True

    def claim_due(self, now: float) -> builtins.list[SyncReportRecord]:
        """Queued syncs for every scheduled source whose time has come (each moved on by its
        interval first; a source still syncing skips this turn)."""
        claimed: builtins.list[SyncReportRecord] = []
        with self.database.session(write=True) as session:
            due = session.execute(
                select(
                    SourceRow.id,
                    SourceRow.name,
                    SourceRow.interval_s,
                    SourceRow.next_sync_at,
                    KnowledgeBaseRow.name,
                )
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == SourceRow.kb_id)
                .where(SourceRow.interval_s > 0, SourceRow.next_sync_at <= now)
            ).all()
            for source_id, name, interval_s, next_sync_at, kb in due:
                moved = session.execute(
                    update(SourceRow)
                    .where(SourceRow.id == source_id, SourceRow.next_sync_at == next_sync_at)
                    .values(next_sync_at=now + interval_s)
                )
                if rows_matched(moved) == 0 or self._active_run(session, source_id) is not None:
                    continue
                claimed.append(_report(kb, name, self._new_run(session, source_id, "schedule")))
        return claimed

    def begin_run(self, run_id: str) -> tuple[SyncReportRecord, SourceRecord] | None:
        """Claim a queued sync for this worker; None when it is gone or already taken."""
        with self.database.session(write=True) as session:
            changed = session.execute(
                update(SyncRunRow)
                .where(SyncRunRow.id == run_id, SyncRunRow.state == "queued")
                .values(state="running", started_at=time.time())
            )
            if rows_matched(changed) == 0:
                return None
            run = session.get(SyncRunRow, run_id)
            source = session.get(SourceRow, run.source_id) if run is not None else None
            if run is None or source is None:
                return None
            kb = (
                session.scalar(select(KnowledgeBaseRow.name).where(KnowledgeBaseRow.id == source.kb_id)) or ""
            )
            return _report(kb, source.name, run), _source(kb, source)

    def finish_run(self, report: SyncReportRecord) -> None:
        with self.database.session(write=True) as session:
            session.execute(
                update(SyncRunRow)
                .where(SyncRunRow.id == report.id)
                .values(
                    state=report.state,
                    error=report.error,
                    report=json.dumps(report.lists()),
                    finished_at=time.time(),
                )
            )

    def run(self, kb: str, name: str, run_id: str = "") -> SyncReportRecord:
        """A sync of the source by id, or its latest; NotFound when there is none."""
        with self.database.session(write=False) as session:
            source = self._row(session, kb, name)
            query = select(SyncRunRow).where(SyncRunRow.source_id == source.id)
            if run_id:
                query = query.where(SyncRunRow.id == run_id)
            row = session.scalar(query.order_by(SyncRunRow.created_at.desc()).limit(1))
            if row is None:
                raise NotFound(f"source {name!r} has no sync{f' {run_id!r}' if run_id else ''} yet")
            return _report(kb, name, row)

    def latest_runs(self, kb: str) -> dict[str, SyncReportRecord]:
        """Each source's latest sync, by source name."""
        latest: dict[str, SyncReportRecord] = {}
        for source in self.list(kb):
            with contextlib.suppress(NotFound):
                latest[source.name] = self.run(kb, source.name)
        return latest

    # -- the files a source owns -------------------------------------------------------------

    def items(self, source_id: str) -> dict[str, str]:
        """The files the source owns: file name -> the item (path, key or URL) it came from."""
        with self.database.session(write=False) as session:
            rows = session.execute(
                select(SourceItemRow.file_name, SourceItemRow.item).where(
                    SourceItemRow.source_id == source_id
                )
            )
            return {file_name: item for file_name, item in rows}

    def owner(self, kb: str, file_name: str) -> str | None:
        """The id of the source owning the file, None for an upload."""
        with self.database.session(write=False) as session:
            kb_id = self.database.kb_row(session, kb).id
            return session.scalar(
                select(SourceItemRow.source_id).where(
                    SourceItemRow.kb_id == kb_id, SourceItemRow.file_name == file_name
                )
            )

    def own(self, source: SourceRecord, file_name: str, item: str) -> None:
        with self.database.session(write=True) as session:
            kb_id = self.database.kb_row(session, source.knowledge_base).id
            existing = session.scalar(
                select(SourceItemRow).where(
                    SourceItemRow.source_id == source.id, SourceItemRow.file_name == file_name
                )
            )
            if existing is None:
                session.add(SourceItemRow(source_id=source.id, kb_id=kb_id, file_name=file_name, item=item))
            else:
                existing.item = item

    def disown(self, source_id: str, file_name: str) -> None:
        with self.database.session(write=True) as session:
            session.execute(
                delete(SourceItemRow).where(
                    SourceItemRow.source_id == source_id, SourceItemRow.file_name == file_name
                )
            )
