"""The gateway store on both databases it supports: SQLite and the real PostgreSQL (a fresh
database per test session, dropped afterwards, so parallel runs never collide)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text

from services.gateway.store import GatewayStore
from services.gateway.store.conversations import NewMessage
from services.gateway.store.keys import hash_key

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    name = f"zhiku_gw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh' / 'catalog.db'}"  # the directory does not exist yet
    else:
        url = request.getfixturevalue("postgres_url")
    opened = GatewayStore(url)
    opened.create_schema()
    opened.create_schema()  # idempotent: every replica runs it at start
    try:
        yield opened
    finally:
        from services.gateway.store.tables import GatewayTable

        GatewayTable.metadata.drop_all(opened.db.engine)
        opened.dispose()


def test_conversations_messages_and_feedback(store: GatewayStore) -> None:
    repo = store.conversations
    first = repo.create("", "handbook")
    second = repo.create("second")
    citations = [{"file_name": "a.md", "chunk_id": "c1", "score": 0.9, "text": "年假", "url": "/x"}]
    stored = repo.append(
        first.id,
        [
            NewMessage(role="user", content="年假怎么申请？"),
            NewMessage("assistant", "提前两周", citations, id="m-1"),
        ],
    )
    assert [m.id for m in stored][1] == "m-1"
    assert repo.list()[0].id == first.id  # the latest activity comes first
    got = repo.get(first.id)
    assert got is not None and got.title == "年假怎么申请？" and got.knowledge_base == "handbook"
    assert [(m.role, m.content) for m in got.messages] == [
        ("user", "年假怎么申请？"),
        ("assistant", "提前两周"),
    ]
    assert got.messages[1].citations == citations
    assert got.messages[0].grounding == {} and got.messages[1].grounding == {}
    assert repo.set_feedback("m-1", 100, "good") is not None
    assert repo.set_feedback("m-1", 0, "changed my mind") is not None
    assert repo.get(first.id).messages[1].feedback.score == 0  # type: ignore[union-attr]
    assert repo.set_feedback("missing", 1, "") is None
    assert repo.rename(second.id, "renamed").title == "renamed"  # type: ignore[union-attr]
    assert repo.delete(first.id) and not repo.delete(first.id)
    assert repo.get(first.id) is None and repo.set_feedback("m-1", 5, "") is None
    assert repo.append(first.id, [NewMessage("user", "late")]) == []


def test_keys_are_hashed_and_revocable(store: GatewayStore) -> None:
    assert store.keys.count_active() == 0
    record, plaintext = store.keys.create("bot", ["handbook"], 30)
    assert store.keys.find(plaintext) == record
    assert store.keys.find(plaintext + "x") is None
    assert record.prefix == plaintext[: len(record.prefix)] and hash_key(plaintext) != plaintext
    assert [k.id for k in store.keys.list()] == [record.id]
    assert store.keys.revoke(record.id) and not store.keys.revoke(record.id)
    assert store.keys.find(plaintext) is None and store.keys.count_active() == 0


def test_file_chats_expire_and_belong_to_their_key(store: GatewayStore) -> None:
    live = store.file_chats.create(ttl_s=3600, owner="key-1")
    dead = store.file_chats.create(ttl_s=0.01, owner="key-1")
    time.sleep(0.05)
    assert live.knowledge_base == f"tmp_{live.id}" and live.owner == "key-1"
    assert store.file_chats.get(live.id, owner="key-1") == live
    assert store.file_chats.get(live.id, owner=None) == live  # admins and an open gateway
    assert store.file_chats.get(live.id, owner="key-2") is None  # another key's reads as unknown
    assert store.file_chats.get(dead.id, owner="key-1") is None  # expired reads as gone before the sweep
    assert store.file_chats.of_knowledge_base(dead.knowledge_base) == dead  # its owner holds it till swept
    assert store.file_chats.of_knowledge_base("tmp_unknown") is None
    assert [chat.id for chat in store.file_chats.expired()] == [dead.id]
    assert store.file_chats.knowledge_bases() == {live.knowledge_base, dead.knowledge_base}
    store.file_chats.forget(dead.id)
    assert store.file_chats.expired() == []


def test_owner_column_is_added_to_an_older_store(tmp_path: Path) -> None:
    """A gateway store from before file chats had owners gains the column at start."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE gw_file_chats (id VARCHAR(32) PRIMARY KEY, knowledge_base VARCHAR(64) UNIQUE, "
                "created_at FLOAT, expires_at FLOAT)"
            )
        )
        connection.execute(text("INSERT INTO gw_file_chats VALUES ('old', 'tmp_old', 0, 1e12)"))
    engine.dispose()
    upgraded = GatewayStore(url)
    try:
        upgraded.create_schema()
        old = upgraded.file_chats.get("old", owner=None)
        assert old is not None and old.owner is None
        assert upgraded.file_chats.get("old", owner="key-1") is None  # ownerless: not any key's
    finally:
        upgraded.dispose()


def test_an_answers_grounding_is_kept(store: GatewayStore) -> None:
    """What a knowledge-base answer said about itself comes back with it, offsets and all."""
    repo = store.conversations
    conversation = repo.create("", "handbook")
    grounding = {
        "abstained": False,
        "retrieval_query": "年假有几天",
        "unsupported": [{"text": "每年加发奖金[1]。", "start": 9, "end": 19}],
    }
    answer = "年假十五天[1]。每年加发奖金[1]。"
    repo.append_turn(conversation.id, "年假有几天？", answer, "m-g", [], grounding)
    got = repo.get(conversation.id)
    assert got is not None and got.messages[1].grounding == grounding
    assert got.messages[1].content[9:19] == "每年加发奖金[1]。"


def test_grounding_column_is_added_to_an_older_store(tmp_path: Path) -> None:
    """A store from before answers kept their grounding gains the column; old answers read {}."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE gw_conversations (id VARCHAR(32) PRIMARY KEY, title TEXT, "
                "knowledge_base VARCHAR(64), owner VARCHAR(64), created_at FLOAT, updated_at FLOAT)"
            )
        )
        connection.execute(
            text(
                "CREATE TABLE gw_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id VARCHAR(32) UNIQUE, "
                "conversation_id VARCHAR(32) REFERENCES gw_conversations(id), role VARCHAR(16), "
                "content TEXT, citations TEXT, created_at FLOAT)"
            )
        )
        connection.execute(text("INSERT INTO gw_conversations VALUES ('c', 't', 'kb', NULL, 0, 0)"))
        connection.execute(text("INSERT INTO gw_messages VALUES (1, 'old', 'c', 'assistant', 'hi', '[]', 0)"))
    engine.dispose()
    upgraded = GatewayStore(url)
    try:
        upgraded.create_schema()
        repo = upgraded.conversations
        repo.append_turn("c", "q", "a", "new", [], {"abstained": True, "retrieval_query": "q"})
        got = repo.get("c")
        assert got is not None
        assert [m.grounding for m in got.messages] == [{}, {}, {"abstained": True, "retrieval_query": "q"}]
    finally:
        upgraded.dispose()


def test_conversations_filtered_by_owner(store: GatewayStore) -> None:
    repo = store.conversations
    owned = repo.create("mine", owner="key-1")
    assert [c.id for c in repo.list(owner="key-1")] == [owned.id]
    assert repo.list(owner="key-2") == [] and [c.id for c in repo.list()] == [owned.id]
    assert repo.get(owned.id, owner="key-2") is None and repo.rename(owned.id, "x", owner="key-2") is None
    repo.append(owned.id, [NewMessage("assistant", "a", id="m-owned")])
    assert repo.set_feedback("m-owned", 1, "", owner="key-2") is None
    assert not repo.delete(owned.id, owner="key-2") and repo.delete(owned.id, owner="key-1")


def test_unreachable_database_is_a_503() -> None:
    from services.gateway.errors import HttpApiError

    from .support import free_port

    dead = GatewayStore(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2")
    try:
        with pytest.raises(HttpApiError) as raised:
            dead.keys.count_active()
        assert raised.value.status == 503 and "unavailable" in raised.value.message
    finally:
        dead.dispose()
