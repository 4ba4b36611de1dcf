"""The gateway's OpenID Connect client: authlib's Starlette integration, configured once.

authlib does the protocol: discovery from ``<issuer>/.well-known/openid-configuration``
(fetched on first use and kept), the authorization URL with ``state``, ``nonce`` and a PKCE
S256 challenge, the code exchange, and validation of the ID token (signature against the
provider's JWKS, ``iss``, ``aud``, ``exp``, ``nonce``, ``at_hash``). Between the redirect and the
callback it keeps state, nonce and verifier in ``request.session``: here a signed cookie of its
own (``zhiku_oidc``, ten minutes, sent only to ``/v1/auth/oidc``), unrelated to the sign-in
session cookie, which is set only after the callback succeeded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any, cast

from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware

from services.gateway.config import OidcSettings

log = logging.getLogger("zhiku.gateway.oidc")

PROVIDER_NAME = "zhiku"
CALLBACK_PATH = "/v1/auth/oidc/callback"
FLOW_COOKIE = "zhiku_oidc"
FLOW_COOKIE_PATH = "/v1/auth/oidc"
FLOW_MAX_AGE_S = 600  # a sign-in at the provider must finish within ten minutes


def build_client(settings: OidcSettings, timeout_s: float) -> StarletteOAuth2App:
    """The registered authlib client; does no I/O (discovery happens on the first sign-in)."""
    secret = settings.client_secret.get_secret_value()
    client_kwargs: dict[str, Any] = {
        "scope": " ".join(settings.scopes),
        "code_challenge_method": "S256",
        "timeout": timeout_s,
    }
    if not secret:
        client_kwargs["token_endpoint_auth_method"] = "none"  # a public client: PKCE alone
    oauth = OAuth()
    oauth.register(
        PROVIDER_NAME,
        client_id=settings.client_id,
        client_secret=secret or None,
        server_metadata_url=f"{settings.issuer}/.well-known/openid-configuration",
        client_kwargs=client_kwargs,
    )
    return cast(StarletteOAuth2App, oauth.create_client(PROVIDER_NAME))


def flow_secret(settings: OidcSettings) -> str:
    """Key of the flow cookie's signature: configured, derived from the client secret, or random.

    Derived (HMAC, never the secret itself) so every replica that shares the client secret
    accepts a callback whose redirect another replica issued.
    """
    configured = settings.state_secret.get_secret_value()
    if configured:
        return configured
    client_secret = settings.client_secret.get_secret_value()
    if client_secret:
        return hmac.new(client_secret.encode(), b"zhiku-oidc-flow-cookie", hashlib.sha256).hexdigest()
    log.warning(
        "single sign-on uses a public client and no ZHIKU_GATEWAY_OIDC_STATE_SECRET: sign-in flows "
        "are bound to this replica (set it when several gateways share the traffic)"
    )
    return secrets.token_hex(32)


def flow_cookie_middleware(settings: OidcSettings, secure: bool) -> Middleware:
    """Starlette's signed-cookie session, limited to the two OIDC routes and ten minutes."""
    return Middleware(
        SessionMiddleware,
        secret_key=flow_secret(settings),
        session_cookie=FLOW_COOKIE,
        max_age=FLOW_MAX_AGE_S,
        path=FLOW_COOKIE_PATH,
        same_site="lax",  # the provider's redirect back is a top-level GET: the cookie comes along
        https_only=secure,
    )
