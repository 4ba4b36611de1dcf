"""The two legs of an OpenID Connect sign-in: the redirect to the provider and the callback.

authlib does every protocol step (see ``client.py``); this module adds what Zhiku needs around
them: where to go afterwards (``next``, checked local and carried with the state), userinfo
when the ID token lacks the email or groups claim, and one precise error per way a sign-in can
fail (statuses in ``errors.SSO_FAILURE_STATUS``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.starlette_client import StarletteOAuth2App
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import RedirectResponse

from services.gateway.config import OidcSettings
from services.gateway.errors import HttpApiError, sso_error
from services.gateway.oidc.claims import MissingClaim, SsoIdentity, identity_from_claims, lacks_any
from services.gateway.oidc.client import CALLBACK_PATH
from services.gateway.oidc.next_path import DEFAULT_NEXT, next_path_error

log = logging.getLogger("zhiku.gateway.oidc")

NEXT_KEY = "next"  # stored with authlib's state data, read back at the callback
# authlib talks HTTP through httpx2 when it is installed (it is: openai and mcp need it), else
# through httpx; a provider that cannot be reached raises either's HTTPError.
TRANSPORT_ERRORS = (httpx2.HTTPError, httpx.HTTPError)


@dataclass(frozen=True)
class FinishedFlow:
    """A callback that went through: who signed in, and where the browser goes next."""

    identity: SsoIdentity
    next_path: str


class OidcFlow:
    """Built once by ``create_app`` when ``ZHIKU_GATEWAY_OIDC_ISSUER`` is set."""

    def __init__(self, settings: OidcSettings, client: StarletteOAuth2App) -> None:
        self.settings = settings
        self.client = client

    @property
    def label(self) -> str:
        """The sign-in page's SSO button text (``GET /v1/auth/config``)."""
        return self.settings.label

    def callback_url(self, request: Request) -> str:
        """The redirect URI sent to the provider: configured, or this gateway's own callback."""
        if self.settings.redirect_url:
            return self.settings.redirect_url
        return str(request.base_url.replace(query="", fragment="")).rstrip("/") + CALLBACK_PATH

    async def redirect(self, request: Request, next_path: str) -> RedirectResponse:
        """302 to the provider's authorization endpoint; state, nonce and verifier are kept."""
        problem = next_path_error(next_path)
        if problem is not None:
            raise sso_error("invalid_next", problem)
        redirect_uri = self.callback_url(request)
        try:
            created: dict[str, Any] = await self.client.create_authorization_url(redirect_uri)
        except TRANSPORT_ERRORS as error:
            raise _unreachable(self.settings.issuer, error) from error
        url = created.pop("url")  # kept out of the cookie: the callback does not need it
        await self.client.save_authorize_data(request, redirect_uri=redirect_uri, next=next_path, **created)
        return RedirectResponse(url, status_code=302)

    async def finish(self, request: Request) -> FinishedFlow:
        """Validate the callback and return who signed in, or raise the precise sign-in error."""
        state = request.query_params.get("state") or ""
        stored = await self.client.framework.get_state_data(request.session, state) if state else None
        next_path = str((stored or {}).get(NEXT_KEY) or DEFAULT_NEXT)
        if next_path_error(next_path) is not None:  # signed by us, so only a changed key lands here
            next_path = DEFAULT_NEXT
        try:
            token: dict[str, Any] = await self.client.authorize_access_token(request)
            claims = await self._claims(token)
        except MismatchingStateError as error:
            raise sso_error(
                "state_mismatch",
                "this sign-in was not started here or has expired (the state does not match): start again",
            ) from error
        except OAuthError as error:
            raise _provider_error(error) from error
        except JoseError as error:
            raise sso_error(
                "invalid_id_token", f"the identity provider's ID token is not valid: {error}"
            ) from error
        except TRANSPORT_ERRORS as error:
            raise _unreachable(self.settings.issuer, error) from error
        try:
            identity = identity_from_claims(claims, self.settings)
        except MissingClaim as error:
            raise sso_error("missing_claim", str(error)) from error
        return FinishedFlow(identity, next_path)

    async def _claims(self, token: Mapping[str, Any]) -> dict[str, Any]:
        """The validated ID token's claims, completed from userinfo when the email or groups
        claim is missing (many providers put them only there)."""
        id_claims = token.get("userinfo")
        if not id_claims:
            raise sso_error(
                "missing_claim",
                "the identity provider returned no ID token: the client must be allowed the openid scope",
            )
        claims = dict(id_claims)
        metadata = await self.client.load_server_metadata()
        if lacks_any(claims, self.settings) and metadata.get("userinfo_endpoint"):
            info = dict(await self.client.userinfo(token=token))
            if info.get("sub") != claims.get("sub"):
                raise sso_error("invalid_id_token", "the provider's userinfo is about another subject")
            claims = {**info, **claims}  # what the signed ID token says wins
        return claims


def _provider_error(error: OAuthError) -> HttpApiError:
    """The provider sent ``error=...`` to the callback, or refused the code exchange."""
    code = str(getattr(error, "error", "") or "oauth_error")
    description = str(getattr(error, "description", "") or "").strip()
    said = f"{code}: {description}" if description else code
    if code in ("access_denied", "consent_required", "login_required", "interaction_required"):
        return sso_error("access_denied", f"the identity provider did not sign you in ({said})")
    return sso_error("provider_error", f"the identity provider refused the sign-in ({said})")


def _unreachable(issuer: str, error: Exception) -> HttpApiError:
    log.warning("identity provider unreachable: %s", error)
    return sso_error(
        "provider_unreachable", f"the identity provider at {issuer} could not be reached: {error}"
    )
