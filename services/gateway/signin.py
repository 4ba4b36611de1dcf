"""Starting and ending a browser session: the server-side row, the cookie, the audit entry.

Shared by password sign-in (``routes/auth.py``) and single sign-on, so both make the same
cookie: ``zhiku_session``, HttpOnly (no script reads it), SameSite=Lax (not sent with other
sites' writes), Secure when configured or when the sign-in came over HTTPS.
"""

from __future__ import annotations

import math

from fastapi import Request, Response

from services.gateway.access import SESSION_COOKIE, user_principal
from services.gateway.audit import AuditAction, AuditTrail, client_of
from services.gateway.config import GatewaySettings
from services.gateway.store import GatewayStore
from services.gateway.store.sessions import SessionRecord
from services.gateway.store.users import UserRecord


def _secure(request: Request, settings: GatewaySettings) -> bool:
    if settings.session_cookie_secure is not None:
        return settings.session_cookie_secure
    return request.url.scheme == "https"


async def start_session(
    request: Request,
    response: Response,
    user: UserRecord,
    store: GatewayStore,
    settings: GatewaySettings,
    audit: AuditTrail,
    method: str = "password",
) -> SessionRecord:
    """Sign ``user`` in: a new session, its cookie on ``response``, ``auth.login`` audited.
    Sessions past their expiry are deleted here too (one indexed delete per sign-in keeps the
    table small without a sweeper of its own)."""
    await store.run(store.sessions.purge_expired)
    address, agent = client_of(request)
    session, token = await store.run(
        store.sessions.create, user.id, settings.session_ttl_s, address or "", agent or ""
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=math.ceil(settings.session_ttl_s),
        path="/",
        secure=_secure(request, settings),
        httponly=True,
        samesite="lax",
    )
    principal = user_principal(user, session, settings.user_rate_limit_per_minute)
    await audit.record(
        AuditAction.LOGIN, request=request, actor=principal, target=user.id, detail={"method": method}
    )
    return session


def end_cookie(response: Response, request: Request, settings: GatewaySettings) -> None:
    """Tell the browser to drop the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(request, settings), httponly=True, samesite="lax"
    )
