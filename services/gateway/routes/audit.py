"""``GET /v1/audit``: the audit trail, newest first, for admins (the route table's rule; any
caller while the gateway is open), filtered by actor, action, knowledge base and time, in pages
joined by a cursor."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.gateway.audit import AuditAction
from services.gateway.deps import StoreDep
from services.gateway.errors import HttpApiError
from services.gateway.schemas.refs import KB_REF
from services.gateway.store.audit import AuditEntry, AuditQuery

router = APIRouter(prefix="/v1/audit", tags=["audit"])

MAX_LIMIT = 1000


class AuditActor(BaseModel):
    type: str = Field(description='"user", "key", "anonymous" (open gateway) or "gateway" (itself)')
    id: str = Field(description="user id, key id, or anonymous/gateway")
    name: str = Field(description="the user's email or the key's name")


class AuditRecord(BaseModel):
    id: str = Field(description="the entry's position in the trail (increasing)")
    at: float = Field(description="unix seconds")
    time: str = Field(description="the same instant, ISO 8601 in UTC")
    action: str
    outcome: str = Field(description='"ok", "denied" or "failed"')
    actor: AuditActor
    key_id: str | None = Field(description="the API key the request came with")
    knowledge_base: str | None
    target: str | None = Field(description="what was acted on: a file, key, source, user...")
    client_ip: str | None = Field(
        description="the client's address (the forwarded one behind a trusted proxy)"
    )
    user_agent: str | None
    request_id: str | None = Field(description="joins the entry with the request's log lines")
    detail: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditRecord:
        return cls(
            id=str(entry.seq),
            at=entry.at,
            time=datetime.fromtimestamp(entry.at, UTC).isoformat().replace("+00:00", "Z"),
            action=entry.action,
            outcome=entry.outcome,
            actor=AuditActor(type=entry.actor_type, id=entry.actor_id, name=entry.actor_name),
            key_id=entry.key_id,
            knowledge_base=entry.knowledge_base,
            target=entry.target,
            client_ip=entry.client_ip,
            user_agent=entry.user_agent,
            request_id=entry.request_id,
            detail=entry.detail,
        )


class AuditList(BaseModel):
    data: list[AuditRecord]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null: no more")


def parse_instant(value: str | None, param: str) -> float | None:
    """Unix seconds from epoch seconds or ISO 8601 (a time without zone is UTC); 422 otherwise."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    problem = HttpApiError(
        422,
        f"{param} must be unix seconds or an ISO 8601 time such as 2026-01-31T08:00:00Z, not {value!r}",
        param=param,
    )
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # "nan" and "inf" parse as floats but are no instants
            raise problem
        return seconds
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise problem from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise HttpApiError(422, f"cursor {cursor!r} is not one this endpoint returned", param="cursor")
    return int(cursor)


@router.get("", response_model=AuditList)
async def list_audit(
    store: StoreDep,
    actor: Annotated[
        str | None, Query(max_length=320, description="a user id or email, or a key id or name")
    ] = None,
    action: Annotated[AuditAction | None, Query(description="one action")] = None,
    knowledge_base: Annotated[str | None, Query(max_length=64, json_schema_extra=KB_REF)] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="from this instant on (unix seconds or ISO 8601)")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="up to this instant (unix seconds or ISO 8601)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="entries per page")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=32, description="next_cursor of the previous page")
    ] = None,
) -> AuditList:
    """Audited actions, newest first: sign-ins, keys, users and groups, sharing, uploads,
    deletions, sources, admin actions and refusals on admin routes."""
    query = AuditQuery(
        actor=actor or None,
        action=None if action is None else str(action),
        knowledge_base=knowledge_base or None,
        since=parse_instant(since, "since"),
        until=parse_instant(until, "until"),
        before_seq=parse_cursor(cursor),
        limit=limit,
    )
    if query.since is not None and query.until is not None and query.since > query.until:
        raise HttpApiError(422, "since must not be later than until", param="since")
    entries, next_seq = await store.run(store.audit.list, query)
    return AuditList(
        data=[AuditRecord.of(entry) for entry in entries],
        next_cursor=None if next_seq is None else str(next_seq),
    )
