"""Users, groups, role grants and sessions in the gateway store, on SQLite and PostgreSQL, and
an older keys-only store gaining the identity tables and the keys' owner column at start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from services.common.errors import AlreadyExists
from services.gateway.store import GatewayStore
from services.gateway.store.grants import HolderKind, Role
from services.gateway.store.keys import hash_key

from .test_store import postgres_url, store  # noqa: F401 (fixtures: both databases)

# gw_api_keys as the releases before users made it (no owner column).
KEYS_ONLY_TABLE = (
    "CREATE TABLE gw_api_keys (id VARCHAR(32) PRIMARY KEY, name VARCHAR(200), prefix VARCHAR(16), "
    "key_hash VARCHAR(64) UNIQUE, knowledge_bases TEXT, rate_limit_per_minute INTEGER, admin BOOLEAN, "
    "created_at FLOAT, revoked_at FLOAT)"
)


def test_users_are_unique_by_lower_cased_email(store: GatewayStore) -> None:  # noqa: F811
    ana = store.users.create("Ana@Example.com", "Ana", "hash", admin=False)
    assert ana.id.startswith("u_") and ana.email == "ana@example.com" and ana.has_password
    with pytest.raises(AlreadyExists):
        store.users.create("ANA@example.com")
    assert store.users.find_by_email(" ana@EXAMPLE.com ") == ana
    assert store.users.password_hash(ana.id) == "hash"
    sso = store.users.create("bo@example.com", sso_subject="https://idp|bo")
    assert sso.sso and not sso.has_password and store.users.find_by_sso_subject("https://idp|bo") == sso
    assert [user.email for user in store.users.list()] == ["ana@example.com", "bo@example.com"]
    assert store.users.count() == 2 and store.users.count_active_admins() == 0


def test_groups_memberships_and_roles(store: GatewayStore) -> None:  # noqa: F811
    ana = store.users.create("ana@example.com")
    store.groups.create("support", "Support team")
    with pytest.raises(AlreadyExists):
        store.groups.create("support")
    assert store.groups.add_member("support", ana.id) is True
    assert store.groups.add_member("support", ana.id) is False  # already there
    assert store.groups.add_member("nobody", ana.id) is None
    assert (found := store.users.get(ana.id)) is not None and found.groups == ("support",)

    store.grants.set("handbook", HolderKind.GROUP, "support", Role.VIEWER)
    store.grants.set("handbook", HolderKind.USER, ana.id, Role.EDITOR)
    store.grants.set("wiki", HolderKind.GROUP, "support", Role.OWNER)
    assert store.grants.roles_of(ana.id, ["support"]) == {"handbook": Role.EDITOR, "wiki": Role.OWNER}
    assert store.grants.roles_of(ana.id, []) == {"handbook": Role.EDITOR}  # left the group
    store.grants.set("handbook", HolderKind.USER, ana.id, Role.VIEWER)  # replaced, not added
    assert [(g.kind, g.role) for g in store.grants.of_knowledge_base("handbook")] == [
        (HolderKind.USER, Role.VIEWER),
        (HolderKind.GROUP, Role.VIEWER),
    ]

    assert store.grants.drop_knowledge_base("handbook") == 2
    assert store.grants.of_knowledge_base("handbook") == []
    assert store.groups.delete("support")  # its memberships and roles go with it
    assert (found := store.users.get(ana.id)) is not None and found.groups == ()
    assert store.grants.of_knowledge_base("wiki") == []


def test_sessions_end_by_sign_out_expiry_disabling_and_deletion(store: GatewayStore) -> None:  # noqa: F811
    ana = store.users.create("ana@example.com")
    session, token = store.sessions.create(ana.id, ttl_s=60, ip="10.0.0.1", user_agent="pytest")
    assert session.token_hash == hash_key(token) and token not in repr(session)
    found = store.sessions.find(token)
    assert found is not None and found[1].id == ana.id and found[0].csrf_token == session.csrf_token
    assert store.sessions.delete(token) and store.sessions.find(token) is None

    _, short = store.sessions.create(ana.id, ttl_s=0.05)
    time.sleep(0.1)
    assert store.sessions.find(short) is None and store.sessions.purge_expired() == 1

    _, token = store.sessions.create(ana.id, ttl_s=60)
    store.users.update(ana.id, disabled=True)
    assert store.sessions.find(token) is None  # disabling ends the sessions
    store.users.update(ana.id, disabled=False)
    _, token = store.sessions.create(ana.id, ttl_s=60)
    key, _ = store.keys.create("ana's", owner=ana.id)
    assert store.users.delete(ana.id) and store.sessions.find(token) is None
    assert store.keys.revoke_owned_by(ana.id) == 1 and store.keys.list() == []
    assert key.owner == ana.id


def test_keys_are_listed_and_revoked_by_owner(store: GatewayStore) -> None:  # noqa: F811
    mine, _ = store.keys.create("mine", owner="u_a")
    theirs, _ = store.keys.create("theirs", owner="u_b")
    legacy, _ = store.keys.create("legacy")
    assert [key.id for key in store.keys.list("u_a")] == [mine.id]
    assert {key.id for key in store.keys.list()} == {mine.id, theirs.id, legacy.id}
    assert not store.keys.revoke(theirs.id, owner="u_a")  # someone else's: as if unknown
    assert store.keys.revoke(mine.id, owner="u_a") and legacy.owner is None


def test_a_keys_only_store_gains_identity_at_start(tmp_path: Path) -> None:
    """A catalog from before users: gw_api_keys without an owner column, no identity tables."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(KEYS_ONLY_TABLE))
        connection.execute(
            text("INSERT INTO gw_api_keys VALUES ('old', 'ops', 'zk-old', :hash, NULL, NULL, 1, 0, NULL)"),
            {"hash": hash_key("zk-old-key")},
        )
    engine.dispose()
    upgraded = GatewayStore(url)
    try:
        upgraded.create_schema()
        old = upgraded.keys.find("zk-old-key")
        assert old is not None and old.owner is None and old.admin
        assert upgraded.users.count() == 0
        ana = upgraded.users.create("ana@example.com")
        new, _ = upgraded.keys.create("ana's", owner=ana.id)
        assert [key.owner for key in upgraded.keys.list()] == [ana.id, None]
        assert new.owner == ana.id
    finally:
        upgraded.dispose()
