"""The end of a successful callback: the user (created on first sign-in), their groups and
roles from the group map, a session, and the redirect to ``next`` with the session cookie.

The store writes the user, groups and roles in one transaction (``store/sso.py``); the
session is started only after that committed, by the same ``start_session`` as a password
sign-in (same cookie, ``auth.login`` audited with method "sso"), so a refused sign-in leaves
neither a user change nor a session.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.gateway.access import Access
from services.gateway.audit import Actor, AuditAction, AuditTrail
from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError, sso_error
from services.gateway.oidc.claims import email_domain_allowed, map_groups
from services.gateway.oidc.flow import FinishedFlow
from services.gateway.signin import start_session
from services.gateway.store import GatewayStore
from services.gateway.store.sso import SsoRefused, SsoSignIn

log = logging.getLogger("zhiku.gateway.oidc")


async def sign_in(request: Request, finished: FinishedFlow) -> Response:
    settings: GatewaySettings = request.app.state.settings
    access: Access = request.app.state.access
    audit: AuditTrail = request.app.state.audit
    store: GatewayStore | None = request.app.state.store
    if store is None:
        raise HttpApiError(503, "the gateway is not started (lifespan did not run)", code="not_started")
    identity = finished.identity
    if not email_domain_allowed(identity.email, settings.oidc):
        raise sso_error(
            "email_domain_refused",
            f"{identity.email} may not sign in here: allowed domains are "
            + ", ".join(settings.oidc.email_domains),
        )
    mapped = map_groups(identity.provider_groups, settings.oidc)
    attempt = SsoSignIn(
        subject=f"{settings.oidc.issuer} {identity.subject}",
        email=identity.email,
        display_name=identity.display_name,
        groups=mapped.groups,
        managed_groups=mapped.managed_groups,
        admin=mapped.admin,
        group_roles=mapped.group_roles,
        auto_create=settings.oidc.auto_create_users,
        keep_admin_email=settings.admin_email.strip().lower(),
    )
    try:
        user, created = await store.run(store.sso.sign_in, attempt)
    except SsoRefused as refused:
        raise sso_error(refused.code, refused.message) from refused
    access.forget_cached()  # a new user closes an open gateway; groups and admin may have changed
    if created:
        await audit.record(
            AuditAction.USER_CREATE,
            request=request,
            actor=Actor("user", user.id, user.email),
            target=user.id,
            detail={"method": "sso", "email": user.email, "groups": list(user.groups), "admin": user.admin},
        )
    response = RedirectResponse(finished.next_path, status_code=303)
    await start_session(request, response, user, store, settings, audit, method="sso")
    log.info(
        "SSO sign-in of %s (%s)",
        user.email,
        "new user" if created else "existing user",
        extra={"fields": {"user_id": user.id, "groups": list(user.groups), "admin": user.admin}},
    )
    return response
