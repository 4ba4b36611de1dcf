"""The first admin, from configuration: ``ZHIKU_GATEWAY_ADMIN_EMAIL`` (+ a password, or SSO).

Made at every start when missing, so a fresh deployment can be signed into at once, and an
existing user of that email is made admin (and enabled) again: configuration is how an
operator who locked themselves out gets back in. A password is set only when the user is
created (or has none yet): changing it later goes through the API, so restarting with an old
environment never resets a password the admin changed.
"""

from __future__ import annotations

import logging

from services.common.errors import AlreadyExists
from services.gateway.config import GatewaySettings
from services.gateway.passwords import hash_password, password_problem
from services.gateway.store import GatewayStore

log = logging.getLogger("zhiku.gateway.first_admin")


async def ensure_first_admin(store: GatewayStore, settings: GatewaySettings) -> None:
    email = settings.admin_email.strip().lower()
    if not email:
        return
    password = settings.admin_password.get_secret_value()
    if password and (problem := password_problem(password)):
        raise ValueError(f"ZHIKU_GATEWAY_ADMIN_PASSWORD: {problem}")
    password_hash = hash_password(password) if password else None
    existing = await store.run(store.users.find_by_email, email)
    if existing is None:
        try:
            await store.run(store.users.create, email, "Administrator", password_hash, True)
            log.info("created the first admin %s", email)
            return
        except AlreadyExists:  # another replica made it meanwhile
            existing = await store.run(store.users.find_by_email, email)
            if existing is None:
                raise
    needs_password = password_hash is not None and not await store.run(store.users.password_hash, existing.id)
    if not existing.admin or existing.disabled or needs_password:
        await store.run(
            store.users.update,
            existing.id,
            admin=True,
            disabled=False,
            password_hash=password_hash if needs_password else None,
        )
        log.info("made %s an admin again (ZHIKU_GATEWAY_ADMIN_EMAIL)", email)
