"""``/v1/auth``: sign-in with email and password, sign-out, who am I, what sign-in is offered.

Signing in makes a server-side session (:mod:`services.gateway.signin`) and answers the
session's CSRF token, which the browser sends back as ``X-CSRF-Token`` on every write. A
wrong email and a wrong password get the same answer in the same time (a dummy argon2 check
runs for unknown emails), and each email may try ``LOGIN_ATTEMPTS_PER_MINUTE`` times a minute.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from fastapi import APIRouter, Request, Response, status

from services.gateway.access import SESSION_COOKIE
from services.gateway.audit import Actor, AuditAction
from services.gateway.deps import AccessDep, AuditDep, CurrentKey, SettingsDep, StoreDep
from services.gateway.errors import HttpApiError, error_response
from services.gateway.passwords import verify_password
from services.gateway.schemas.identity import AuthConfig, Login, Me, SignedIn, User
from services.gateway.signin import end_cookie, start_session
from services.gateway.store.users import normalize_email

router = APIRouter(prefix="/v1/auth", tags=["auth"])

LOGIN_ATTEMPTS_PER_MINUTE = 10


class SingleSignOn(Protocol):
    """What the sign-in page needs to know of a configured SSO provider (``app.state.sso``)."""

    label: str


@router.get("/config", response_model=AuthConfig)
async def auth_config(request: Request) -> AuthConfig:
    """What the sign-in page offers: password sign-in always, SSO when configured."""
    sso: SingleSignOn | None = getattr(request.app.state, "sso", None)
    return AuthConfig(password=True, sso=sso is not None, sso_label="" if sso is None else sso.label)


@router.post(
    "/login",
    response_model=SignedIn,
    responses={
        401: {"description": "wrong email or password"},
        403: {"description": "the account is disabled"},
    },
)
async def login(
    body: Login,
    request: Request,
    response: Response,
    store: StoreDep,
    access: AccessDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> Any:
    """Sign in: sets the ``zhiku_session`` cookie and answers the user and the CSRF token."""
    email = normalize_email(body.email)
    wait = await access.limiter.retry_after(f"login:{email}", LOGIN_ATTEMPTS_PER_MINUTE)
    if wait is not None:
        return error_response(
            429,
            f"too many sign-in attempts for this email; retry in {wait} s",
            "rate_limit_exceeded",
            headers={"Retry-After": str(wait)},
        )
    user = await store.run(store.users.find_by_email, email)
    password_hash = None if user is None else await store.run(store.users.password_hash, user.id)
    # argon2 takes tens of milliseconds of CPU: off the event loop.
    if user is None or not await asyncio.to_thread(verify_password, body.password, password_hash):
        await audit.record(
            AuditAction.LOGIN_FAILED,
            request=request,
            actor=Actor("user", user.id if user else "unknown", email),
            outcome="denied",
            detail={"method": "password"},
        )
        raise HttpApiError(401, "wrong email or password", code="invalid_credentials")
    if user.disabled:
        raise HttpApiError(403, "this account is disabled: ask an admin", code="account_disabled")
    session = await start_session(request, response, user, store, settings, audit)
    return SignedIn(user=User.of(user), csrf_token=session.csrf_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def logout(
    request: Request, principal: CurrentKey, store: StoreDep, settings: SettingsDep, audit: AuditDep
) -> Response:
    """End this browser's session (if any) and drop its cookie; always 204."""
    token = request.cookies.get(SESSION_COOKIE)
    ended = bool(token) and await store.run(store.sessions.delete, token or "")
    if ended and principal is not None:
        await audit.record(AuditAction.LOGOUT, request=request, target=principal.user_id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    end_cookie(response, request, settings)
    return response


@router.get("/me", response_model=Me)
async def me(principal: CurrentKey, store: StoreDep) -> Me:
    """The caller: the signed-in user with the session's CSRF token, a key's owner, or nobody
    (``auth: "open"`` while the gateway needs no credentials)."""
    if principal is None:
        return Me(user=None, csrf_token="", auth="open")
    user = None if principal.user_id is None else await store.run(store.users.get, principal.user_id)
    return Me(
        user=None if user is None else User.of(user),
        csrf_token="" if principal.session is None else principal.session.csrf_token,
        auth="session" if principal.session is not None else "key",
    )
