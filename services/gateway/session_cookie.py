"""The sign-in session cookie (``zhiku_session``): how every way of signing in hands it out.

HttpOnly (page scripts never see the token), SameSite=Lax (other sites' forms and fetches do
not carry it; a link the user follows does, which the SSO callback needs), Secure when
``ZHIKU_GATEWAY_SESSION_COOKIE_SECURE`` says so or, unset, when the sign-in came over HTTPS.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.access import SESSION_COOKIE
from services.gateway.config import GatewaySettings


def cookie_secure(request: Request, settings: GatewaySettings) -> bool:
    configured = settings.session_cookie_secure
    return request.url.scheme == "https" if configured is None else configured


def set_session_cookie(response: Response, token: str, request: Request, settings: GatewaySettings) -> None:
    """Give the browser the session token, for as long as the session lives."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_ttl_s),
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request, settings),
    )
