"""The audit trail's table: appended by :class:`services.gateway.audit.AuditTrail`, read by
``GET /v1/audit`` newest first with a cursor, pruned past the retention period."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from services.common.database import rows_matched
from services.gateway.store.database import Database
from services.gateway.store.tables import AuditRow


@dataclass(frozen=True)
class AuditEntry:
    """One audited action, as recorded (``seq`` is 0 until stored)."""

    at: float
    action: str
    outcome: str
    actor_type: str
    actor_id: str
    actor_name: str
    key_id: str | None = None
    knowledge_base: str | None = None
    target: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int = 0


@dataclass(frozen=True)
class AuditQuery:
    """Filters of a listing; None leaves a field unfiltered. ``actor`` matches the actor's id or
    name (a user id, an email, a key id or a key's name); ``before_seq`` is the cursor."""

    actor: str | None = None
    action: str | None = None
    knowledge_base: str | None = None
    since: float | None = None
    until: float | None = None
    before_seq: int | None = None
    limit: int = 100


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        action=row.action,
        outcome=row.outcome,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        key_id=row.key_id,
        knowledge_base=row.knowledge_base,
        target=row.target,
        client_ip=row.client_ip,
        user_agent=row.user_agent,
        request_id=row.request_id,
        detail=json.loads(row.detail or "{}"),
    )


def _row(entry: AuditEntry) -> AuditRow:
    return AuditRow(
        at=entry.at,
        action=entry.action,
        outcome=entry.outcome,
        actor_type=entry.actor_type,
        actor_id=entry.actor_id,
        actor_name=entry.actor_name,
        key_id=entry.key_id,
        knowledge_base=entry.knowledge_base,
        target=entry.target,
        client_ip=entry.client_ip,
        user_agent=entry.user_agent,
        request_id=entry.request_id,
        detail=json.dumps(entry.detail, ensure_ascii=False, default=str),
    )


class AuditRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, entry: AuditEntry, prune_before: float | None = None) -> int:
        """Store ``entry`` and return its ``seq``; with ``prune_before``, drop older entries in
        the same transaction (the caller asks for that rarely, so pruning costs one indexed
        delete now and then)."""
        return self.add_all([entry], prune_before)[0]

    def add_all(self, entries: Sequence[AuditEntry], prune_before: float | None = None) -> list[int]:
        """Store ``entries`` in one transaction, in order, and return their ``seq``s: an
        upload of a hundred files records a hundred entries with one commit, not a hundred."""
        rows = [_row(entry) for entry in entries]
        with self.db.session(write=True) as session:
            if prune_before is not None:
                session.execute(delete(AuditRow).where(AuditRow.at < prune_before))
            session.add_all(rows)
            session.flush()
            return [row.seq for row in rows]

    def list(self, query: AuditQuery) -> tuple[list[AuditEntry], int | None]:
        """Matching entries, newest first, and the cursor of the next page (None: no more)."""
        statement = select(AuditRow)
        if query.actor is not None:
            statement = statement.where(
                (AuditRow.actor_id == query.actor) | (AuditRow.actor_name == query.actor)
            )
        if query.action is not None:
            statement = statement.where(AuditRow.action == query.action)
        if query.knowledge_base is not None:
            statement = statement.where(AuditRow.knowledge_base == query.knowledge_base)
        if query.since is not None:
            statement = statement.where(AuditRow.at >= query.since)
        if query.until is not None:
            statement = statement.where(AuditRow.at <= query.until)
        if query.before_seq is not None:
            statement = statement.where(AuditRow.seq < query.before_seq)
        # One row more than asked tells whether another page exists without a count query.
        statement = statement.order_by(AuditRow.seq.desc()).limit(query.limit + 1)
        with self.db.session() as session:
            rows = session.scalars(statement).all()
        entries = [_entry(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return entries, (entries[-1].seq if more and entries else None)

    def prune(self, before: float) -> int:
        """Delete entries recorded before ``before`` (unix seconds); how many went."""
        with self.db.session(write=True) as session:
            return rows_matched(session.execute(delete(AuditRow).where(AuditRow.at < before)))
