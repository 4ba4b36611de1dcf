"""Who may migrate a knowledge base: its owners and admins, not its editors or viewers (the
route table says manage). The services' addresses are dead: a request that passes every
check reaches the ingest service and gets 503."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.gateway.store.grants import HolderKind, Role

from .test_auth import ADMIN_EMAIL, ADMIN_PASSWORD, ANA, gateway, make_user, second_client, sign_in

__all__ = ["gateway"]  # the fixture, imported for these tests

BODY = {"embed_model": "e5"}


async def test_owners_and_admins_may_migrate_editors_and_viewers_may_not(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, admin = gateway
    csrf = await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    ana = await make_user(admin, csrf, *ANA)
    store = app.state.store
    for kb, role in (("owned", Role.OWNER), ("edited", Role.EDITOR), ("viewed", Role.VIEWER)):
        await store.run(store.grants.set, kb, HolderKind.USER, ana["id"], role)
    app.state.guard.forget_roles()
    async with second_client(app) as browser:
        headers = {"X-CSRF-Token": await sign_in(browser, *ANA)}
        owned = await browser.post("/v1/knowledge_bases/owned/migrate", json=BODY, headers=headers)
        assert owned.status_code == 503, owned.text
        for kb in ("edited", "viewed"):
            refused = await browser.post(f"/v1/knowledge_bases/{kb}/migrate", json=BODY, headers=headers)
            assert refused.status_code == 403, refused.text
            assert "owner role" in refused.json()["error"]["message"]
        hidden = await browser.post("/v1/knowledge_bases/other/migrate", json=BODY, headers=headers)
        assert hidden.status_code == 404
        no_csrf = await browser.post("/v1/knowledge_bases/owned/migrate", json=BODY)
        assert no_csrf.status_code == 403
    by_admin = await admin.post(
        "/v1/knowledge_bases/other/migrate", json=BODY, headers={"X-CSRF-Token": csrf}
    )
    assert by_admin.status_code == 503
