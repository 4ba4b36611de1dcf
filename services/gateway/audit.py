"""The audit trail: who did what, when, from where, with what outcome.

One call records an action: :meth:`AuditTrail.record`. Each entry is written to the store's
``gw_audit`` table (read back by ``GET /v1/audit``) and emitted as one JSON line on the
``zhiku.audit`` logger, so a log pipeline gets the trail even without querying the API.

Recording never fails the request it belongs to: a store that cannot take the entry is logged
(the JSON line still goes out, with ``"stored": false``) and counted in
``zhiku_audit_failures_total``, so a lost entry is never silent.

The client address is ``request.client``: behind a proxy listed in
``ZHIKU_GATEWAY_TRUSTED_PROXIES`` the app's proxy-headers middleware has already replaced it with
the address ``X-Forwarded-For`` names, and from anyone else that header is ignored.

Recording, from a route (the actor defaults to the request's principal)::

    await audit.record(AuditAction.KEY_REVOKE, request=request, target=key_id)
    await audit.record(
        AuditAction.LOGIN, request=request, actor=Actor("user", user.id, user.email), detail={"method": "sso"}
    )

Entries older than ``ZHIKU_GATEWAY_AUDIT_RETENTION_DAYS`` are deleted by a write at most once
per :data:`PRUNE_INTERVAL_S` in each replica: an indexed delete now and then, no loop of its own.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter
from starlette.requests import Request

from services.common.logging import current_request_id
from services.gateway.access import Principal
from services.gateway.store import GatewayStore
from services.gateway.store.audit import AuditEntry

audit_log = logging.getLogger("zhiku.audit")
log = logging.getLogger("zhiku.gateway.audit")

AUDIT_RECORDS = Counter("zhiku_audit_records_total", "Audit entries recorded", ["action", "outcome"])
AUDIT_FAILURES = Counter(
    "zhiku_audit_failures_total", "Audit entries the store could not take (logged only)", ["action"]
)

PRUNE_INTERVAL_S = 3600.0
USER_AGENT_MAX_CHARS = 512
DAY_S = 86_400.0


class AuditAction(enum.StrEnum):
    """Every action the trail knows; ``GET /v1/audit?action=`` accepts exactly these."""

    # Sign-in and sessions
    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    LOGOUT = "auth.logout"
    # People and groups
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_DELETE = "user.delete"
    GROUP_CREATE = "group.create"
    GROUP_DELETE = "group.delete"
    GROUP_MEMBER_ADD = "group.member_add"
    GROUP_MEMBER_REMOVE = "group.member_remove"
    # API keys
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    # Knowledge bases, their sharing and their files
    KB_CREATE = "kb.create"
    KB_DELETE = "kb.delete"
    KB_MIGRATE = "kb.migrate"
    KB_MEMBER_SET = "kb.member_set"
    KB_MEMBER_REMOVE = "kb.member_remove"
    FILE_UPLOAD = "file.upload"
    FILE_DELETE = "file.delete"
    FILE_REINDEX = "file.reindex"
    FILE_ACCESS_SET = "file.access_set"
    # Sources (synced folders and sites)
    SOURCE_CREATE = "source.create"
    SOURCE_DELETE = "source.delete"
    SOURCE_SYNC = "source.sync"
    # Admin: the agent's SQL databases
    AGENT_DATABASE_REGISTER = "agent_database.register"
    AGENT_DATABASE_REMOVE = "agent_database.remove"
    # Conversations
    CONVERSATION_DELETE = "conversation.delete"
    # Refusals worth a trace (403 on admin routes)
    ACCESS_DENIED = "access.denied"


@dataclass(frozen=True)
class Actor:
    """Who acted: ``type`` is "user", "key", "anonymous" (an open gateway's caller) or
    "gateway" (its own background work); ``key_id`` the key a request came with, if any."""

    type: str
    id: str
    name: str
    key_id: str | None = None


ANONYMOUS: Final = Actor("anonymous", "anonymous", "anonymous")
GATEWAY_ACTOR: Final = Actor("gateway", "gateway", "gateway")


class _FromRequest:
    def __repr__(self) -> str:
        return "FROM_REQUEST"


FROM_REQUEST: Final = _FromRequest()


def actor_of(principal: Principal | None) -> Actor:
    """The actor behind a request's principal (None: an open gateway, anyone)."""
    if principal is None:
        return ANONYMOUS
    # user_id/email/session arrive with people and sign-in (getattr: this module predates
    # them); key-only principals have none. A session's key_id names the session, not a key.
    user_id: str | None = getattr(principal, "user_id", None)
    if user_id:
        email: str | None = getattr(principal, "email", None)
        by_session = getattr(principal, "session", None) is not None
        key_id = None if by_session or principal.key_id == user_id else principal.key_id
        return Actor("user", user_id, email or principal.name, key_id)
    return Actor("key", principal.key_id, principal.name, principal.key_id)


def client_of(request: Request | None) -> tuple[str | None, str | None]:
    """The caller's address (already the forwarded one behind a trusted proxy) and user agent."""
    if request is None:
        return None, None
    address = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return address, agent[:USER_AGENT_MAX_CHARS] if agent else None


class AuditTrail:
    """Records audited actions; built by ``create_app``, given the store at start."""

    def __init__(self, retention_days: float = 0.0) -> None:
        self.store: GatewayStore | None = None
        self.retention_s = retention_days * DAY_S
        self._last_prune = 0.0

    def _prune_before(self, now: float) -> float | None:
        """The cutoff to prune with this write, at most once per interval (None: not now)."""
        if not self.retention_s or now - self._last_prune < PRUNE_INTERVAL_S:
            return None
        self._last_prune = now
        return now - self.retention_s

    async def record(
        self,
        action: AuditAction,
        *,
        request: Request | None = None,
        actor: Principal | Actor | _FromRequest | None = FROM_REQUEST,
        knowledge_base: str | None = None,
        target: str | None = None,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Record ``action``; never raises. ``actor`` defaults to the request's principal
        (anonymous without a request); pass a Principal or an :class:`Actor` for someone else
        (a user signing in, the gateway itself). ``detail`` must hold no secrets."""
        [entry] = await self.record_each(
            action,
            [(target, detail)],
            request=request,
            actor=actor,
            knowledge_base=knowledge_base,
            outcome=outcome,
        )
        return entry

    async def record_each(
        self,
        action: AuditAction,
        targets: Sequence[tuple[str | None, dict[str, Any] | None]],
        *,
        request: Request | None = None,
        actor: Principal | Actor | _FromRequest | None = FROM_REQUEST,
        knowledge_base: str | None = None,
        outcome: str = "ok",
    ) -> list[AuditEntry]:
        """Record ``action`` once per (target, detail), as :meth:`record` does, with one
        write for all of them: an upload of many files is one transaction of the audit
        table, where an entry per file each with its own commit was a third of the
        gateway's CPU while files were uploaded. Never raises."""
        if isinstance(actor, _FromRequest):
            actor = getattr(request.state, "principal", None) if request is not None else None
        who = actor if isinstance(actor, Actor) else actor_of(actor)
        address, agent = client_of(request)
        now, request_id = time.time(), current_request_id() or None
        entries = [
            AuditEntry(
                at=now,
                action=str(action),
                outcome=outcome,
                actor_type=who.type,
                actor_id=who.id,
                actor_name=who.name,
                key_id=who.key_id,
                knowledge_base=knowledge_base,
                target=target,
                client_ip=address,
                user_agent=agent,
                request_id=request_id,
                detail=dict(detail or {}),
            )
            for target, detail in targets
        ]
        if not entries:
            return entries
        stored = await self._store(entries)
        AUDIT_RECORDS.labels(str(action), outcome).inc(len(entries))
        for entry in entries:
            fields = {"audit": {**_public(entry), "stored": stored}}
            audit_log.info("%s by %s: %s", entry.action, who.id, outcome, extra={"fields": fields})
        return entries

    async def _store(self, entries: list[AuditEntry]) -> bool:
        store = self.store
        action = entries[0].action
        try:
            if store is None:
                raise RuntimeError("the gateway's store is not open")
            await store.run(store.audit.add_all, entries, self._prune_before(entries[0].at))
        except Exception:  # the request goes on; the loss is logged and counted
            AUDIT_FAILURES.labels(action).inc(len(entries))
            log.exception("%d audit entries %s could not be stored", len(entries), action)
            return False
        return True


def _public(entry: AuditEntry) -> dict[str, Any]:
    """The entry as the JSON line and the API show it."""
    return {
        "at": entry.at,
        "action": entry.action,
        "outcome": entry.outcome,
        "actor": {"type": entry.actor_type, "id": entry.actor_id, "name": entry.actor_name},
        "key_id": entry.key_id,
        "knowledge_base": entry.knowledge_base,
        "target": entry.target,
        "client_ip": entry.client_ip,
        "user_agent": entry.user_agent,
        "request_id": entry.request_id,
        "detail": entry.detail,
    }
