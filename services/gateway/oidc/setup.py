"""What ``create_app`` adds for single sign-on: the flow object and its cookie middleware.

Both are absent while ``ZHIKU_GATEWAY_OIDC_ISSUER`` is empty, so a gateway without SSO carries
no extra middleware and its OIDC routes answer 404.
"""

from __future__ import annotations

from starlette.middleware import Middleware

from services.gateway.config import GatewaySettings
from services.gateway.oidc.client import build_client, flow_cookie_middleware
from services.gateway.oidc.flow import OidcFlow


def oidc_flow(settings: GatewaySettings) -> OidcFlow | None:
    if not settings.oidc.enabled:
        return None
    return OidcFlow(settings.oidc, build_client(settings.oidc, settings.request_timeout_s))


def oidc_middleware(settings: GatewaySettings) -> list[Middleware]:
    if not settings.oidc.enabled:
        return []
    # Starlette fixes the flag at start: the configured session setting, else an https callback.
    configured = settings.session_cookie_secure
    secure = settings.oidc.redirect_url.startswith("https://") if configured is None else configured
    return [flow_cookie_middleware(settings.oidc, secure)]
