"""The audit trail's table on SQLite and the real PostgreSQL: entries come back newest first,
every filter narrows, the cursor pages without gaps or repeats, and pruning drops only what is
older than the cutoff."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway.store import GatewayStore
from services.gateway.store.audit import AuditEntry, AuditQuery

from .test_store import postgres_url  # noqa: F401 - the fixture, shared with the other store tests

T0 = 1_790_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
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


def entry(
    at: float, action: str, actor: str = "u_alice", kb: str | None = None, **extra: object
) -> AuditEntry:
    return AuditEntry(
        at=at,
        action=action,
        outcome="ok",
        actor_type="user",
        actor_id=actor,
        actor_name=f"{actor}@example.com",
        knowledge_base=kb,
        **extra,  # type: ignore[arg-type]
    )


def actions(entries: list[AuditEntry]) -> list[str]:
    return [e.action for e in entries]


def test_entries_round_trip_newest_first_and_filter(store: GatewayStore) -> None:
    repo = store.audit
    first = repo.add(
        entry(
            T0,
            "key.create",
            target="k1",
            client_ip="203.0.113.7",
            user_agent="curl/8",
            request_id="r1",
            key_id="k0",
            detail={"name": "机器人", "admin": False},
        )
    )
    repo.add(entry(T0 + 10, "kb.create", kb="handbook"))
    repo.add(entry(T0 + 20, "file.upload", actor="u_bob", kb="handbook", target="a.md"))
    repo.add(entry(T0 + 30, "file.delete", kb="other", target="b.md"))

    everything, cursor = repo.list(AuditQuery())
    assert actions(everything) == ["file.delete", "file.upload", "kb.create", "key.create"]
    assert cursor is None
    oldest = everything[-1]
    assert oldest.seq == first and oldest.detail == {"name": "机器人", "admin": False}
    assert (oldest.client_ip, oldest.user_agent, oldest.request_id, oldest.key_id, oldest.target) == (
        "203.0.113.7",
        "curl/8",
        "r1",
        "k0",
        "k1",
    )

    assert actions(repo.list(AuditQuery(action="kb.create"))[0]) == ["kb.create"]
    assert actions(repo.list(AuditQuery(knowledge_base="handbook"))[0]) == ["file.upload", "kb.create"]
    # The actor matches by id or by name (an email, a key's name).
    assert actions(repo.list(AuditQuery(actor="u_bob"))[0]) == ["file.upload"]
    assert actions(repo.list(AuditQuery(actor="u_bob@example.com"))[0]) == ["file.upload"]
    assert repo.list(AuditQuery(actor="nobody"))[0] == []
    # Both ends of a time range are inclusive.
    assert actions(repo.list(AuditQuery(since=T0 + 10, until=T0 + 20))[0]) == ["file.upload", "kb.create"]
    assert actions(repo.list(AuditQuery(since=T0 + 25))[0]) == ["file.delete"]
    assert actions(repo.list(AuditQuery(until=T0 + 5))[0]) == ["key.create"]
    combined = AuditQuery(actor="u_alice", knowledge_base="handbook", action="kb.create", since=T0)
    assert actions(repo.list(combined)[0]) == ["kb.create"]


def test_cursor_pages_without_gaps_or_repeats(store: GatewayStore) -> None:
    repo = store.audit
    for index in range(7):
        repo.add(entry(T0 + index, "file.upload", target=f"f{index}.md"))
    repo.add(entry(T0 + 100, "kb.delete"))  # filtered out below: pages hold matches only

    seen: list[str] = []
    cursor: int | None = None
    pages = 0
    while True:
        page, cursor = repo.list(AuditQuery(action="file.upload", limit=3, before_seq=cursor))
        seen += [e.target or "" for e in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [f"f{index}.md" for index in reversed(range(7))]
    assert pages == 3
    # A page that ends exactly at the last match says there is no more.
    assert repo.list(AuditQuery(action="kb.delete", limit=1))[1] is None


def test_pruning_drops_only_older_entries(store: GatewayStore) -> None:
    repo = store.audit
    repo.add(entry(T0, "key.create"))
    repo.add(entry(T0 + 50, "key.revoke"))
    assert repo.prune(T0 + 1) == 1
    assert actions(repo.list(AuditQuery())[0]) == ["key.revoke"]
    # A write can prune in its own transaction.
    repo.add(entry(T0 + 100, "kb.create"), prune_before=T0 + 60)
    assert actions(repo.list(AuditQuery())[0]) == ["kb.create"]
    # Sequence numbers keep increasing after pruning emptied the table (cursors stay valid).
    before = repo.list(AuditQuery())[0][0].seq
    repo.prune(T0 + 1000)
    assert repo.add(entry(T0 + 2000, "kb.delete")) > before


def test_many_entries_go_in_one_write_in_order(store: GatewayStore) -> None:
    """An upload's entries, one per file, stored together: every one kept, in the order given,
    with increasing seqs, and a prune in the same write drops only what is older."""
    repo = store.audit
    repo.add(entry(T0, "key.create"))
    seqs = repo.add_all(
        [entry(T0 + 100, "file.upload", kb="handbook", target=f"f{index}.md") for index in range(5)],
        prune_before=T0 + 1,
    )
    assert len(seqs) == 5 and seqs == sorted(seqs) and len(set(seqs)) == 5
    listed = repo.list(AuditQuery())[0]
    assert [e.target for e in listed] == [f"f{index}.md" for index in reversed(range(5))]
    assert [e.seq for e in listed] == list(reversed(seqs))
    assert repo.add_all([]) == []
