"""``/v1/auth/oidc``: single sign-on with an OpenID Connect provider.

``login`` sends the browser to the provider; the provider sends it back to ``callback``, which
validates the answer, creates or updates the user (groups from the claim), starts a session
with the same cookie as a password sign-in, and redirects to ``next``. A failed sign-in
answers its precise status; browsers get it as a short page with a way back, programs as the
usual JSON error.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.gateway.audit import ANONYMOUS, Actor, AuditAction, AuditTrail
from services.gateway.errors import HttpApiError, error_response, sso_error
from services.gateway.oidc.flow import OidcFlow
from services.gateway.oidc.next_path import DEFAULT_NEXT
from services.gateway.oidc.sign_in import sign_in
from services.gateway.openapi import ErrorBody

router = APIRouter(prefix="/v1/auth/oidc", tags=["auth"])


def _failure(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    404: _failure("single sign-on is not configured (ZHIKU_GATEWAY_OIDC_ISSUER)")
}
UNREACHABLE: dict[int | str, dict[str, Any]] = {502: _failure("the identity provider could not be reached")}

NextQuery = Annotated[
    str,
    Query(
        max_length=2000,
        description="path on this site to open after signing in (never another site)",
        examples=["/"],
    ),
]


def _flow(request: Request) -> OidcFlow:
    flow: OidcFlow | None = getattr(request.app.state, "sso", None)
    if flow is None:
        raise sso_error("sso_not_configured", "single sign-on is not configured on this gateway")
    return flow


@router.get(
    "/login",
    summary="Start single sign-on: redirect to the identity provider",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        302: {"description": "to the provider's sign-in page"},
        **NOT_CONFIGURED,
        422: _failure("next is not a path on this site"),
        **UNREACHABLE,
    },
)
async def oidc_login(request: Request, next: NextQuery = DEFAULT_NEXT) -> Response:
    try:
        return await _flow(request).redirect(request, next)
    except HttpApiError as error:
        return failure_response(request, error)


@router.get(
    "/callback",
    summary="Finish single sign-on (the provider redirects here)",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        303: {"description": "signed in: to next, with the session cookie set"},
        400: _failure("state mismatch (not started in this browser, or expired), or the provider refused"),
        401: _failure("the provider's ID token is not valid"),
        403: _failure("access denied at the provider; user disabled; sign-up closed; email domain refused"),
        **NOT_CONFIGURED,
        409: _failure("the email belongs to a user linked to another provider account"),
        422: _failure("the provider sent no usable sub, email or groups claim"),
        **UNREACHABLE,
    },
)
async def oidc_callback(request: Request) -> Response:
    try:
        flow = _flow(request)
    except HttpApiError as error:
        return failure_response(request, error)
    email: str | None = None
    try:
        finished = await flow.finish(request)
        email = finished.identity.email
        return await sign_in(request, finished)
    except HttpApiError as error:
        await _audit_failure(request, error, email)
        return failure_response(request, error)


async def _audit_failure(request: Request, error: HttpApiError, email: str | None) -> None:
    """A refused SSO sign-in in the trail: who, when known (the provider said), and why."""
    audit: AuditTrail = request.app.state.audit
    await audit.record(
        AuditAction.LOGIN_FAILED,
        request=request,
        actor=ANONYMOUS if email is None else Actor("user", "unknown", email),
        outcome="denied" if error.status < 500 else "error",
        detail={"method": "sso", "reason": error.code},
    )


def failure_response(request: Request, error: HttpApiError) -> Response:
    """The error as a page for a browser (the callback is a navigation), JSON otherwise."""
    if "text/html" not in request.headers.get("accept", ""):
        json: JSONResponse = error_response(error.status, error.message, error.code, path=request.url.path)
        return json
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Sign-in failed - Zhiku</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto'>"
        f"<h1>Sign-in failed</h1><p id=sso-error data-code='{html.escape(error.code)}'>"
        f"{html.escape(error.message)}</p><p><a href='/'>Back to Zhiku</a></p></body></html>"
    )
    return HTMLResponse(page, status_code=error.status)
