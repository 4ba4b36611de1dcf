"""A file's access list in the catalog (SQLite and PostgreSQL): set at upload or later, kept by
re-uploads and reindexes, the uploader always on a restricted list, applied to the points in
the same transaction, and re-applied by a job that indexed with a list changed meanwhile."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.ingest.jobs import JobLifecycle
from services.ingest.store.access import FileAccessList
from services.ingest.store.catalog import Catalog

SECRET = FileAccessList.of(users=["u_alice"], groups=["finance"])


def _submit(lifecycle: JobLifecycle, content_hash: str = "h1", **options: Any):
    return lifecycle.submit_file("kb", "a.txt", 10, content_hash, 250, 50, "req", **options)


def test_tokens_of_open_and_restricted_lists() -> None:
    assert FileAccessList().tokens() == ["*"]
    assert SECRET.tokens() == ["user:u_alice", "group:finance"]
    assert SECRET.with_uploader("u_bob").tokens() == ["user:u_alice", "user:u_bob", "group:finance"]
    assert FileAccessList().with_uploader("u_bob").tokens() == ["*"]  # open stays open
    assert FileAccessList.from_json(SECRET.to_json()) == SECRET and FileAccessList().to_json() == ""
    assert FileAccessList.of(users=[" u_a ", "u_a"]).users == ("u_a",)


@pytest.mark.parametrize(
    ("users", "groups", "fragment"),
    [
        ([""], [], "empty"),
        (["u a"], [], "white space"),
        ([], ["x" * 300], "over 255"),
        (["u\x07a"], [], "control"),
    ],
)
def test_bad_entries_are_invalid(users: list[str], groups: list[str], fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        FileAccessList.of(users=users, groups=groups)


def test_access_is_set_at_upload_kept_by_reuploads_and_holds_the_uploader(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    _submit(lifecycle, access=SECRET, uploader="u_carol")
    stored = catalog.files.get("kb", "a.txt")
    assert stored.access.users == ("u_alice", "u_carol") and stored.uploader == "u_carol"
    # A re-upload without a list keeps it (new content, and identical content too).
    _submit(lifecycle, content_hash="h2")
    _submit(lifecycle, content_hash="h2")
    assert catalog.files.get("kb", "a.txt").access == stored.access
    # An identical upload that names a list still changes the list.
    _submit(lifecycle, content_hash="h2", access=FileAccessList())
    assert not catalog.files.get("kb", "a.txt").access.restricted
    lifecycle.submit_file("kb", "b.txt", 1, "hb", 250, 50)
    assert catalog.files.get("kb", "b.txt").access.tokens() == ["*"]


def test_set_access_applies_tokens_inside_the_transaction(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    _submit(lifecycle, uploader="u_carol")
    applied: list[tuple[list[str], list[str]]] = []

    def apply(collections: list[str], acl: list[str]) -> None:
        applied.append((collections, acl))

    record = lifecycle.set_access("kb", "a.txt", SECRET, apply)
    assert applied == [(["kb"], ["user:u_alice", "user:u_carol", "group:finance"])]
    assert record.access == catalog.files.get("kb", "a.txt").access

    def down(collections: list[str], acl: list[str]) -> None:
        raise RuntimeError("retrieve is down")

    with pytest.raises(RuntimeError):
        lifecycle.set_access("kb", "a.txt", FileAccessList(), down)
    assert catalog.files.get("kb", "a.txt").access == record.access  # nothing recorded
    with pytest.raises(NotFound):
        lifecycle.set_access("kb", "nope.txt", FileAccessList(), apply)


def test_finish_reapplies_a_list_changed_while_the_job_ran(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    assert lifecycle.begin_attempt(job.id) is not None
    indexed_with = catalog.files.get("kb", "a.txt").access.tokens()  # what the worker read
    lifecycle.set_access("kb", "a.txt", SECRET, lambda collections, acl: None)  # the change meanwhile
    reapplied: list[tuple[list[str], list[str]]] = []

    def reapply(collections: list[str], acl: list[str]) -> None:
        reapplied.append((collections, acl))

    assert lifecycle.finish_job(job.id, 3, written=["kb"], acl=indexed_with, reapply=reapply)
    assert reapplied == [(["kb"], SECRET.tokens())]
    # Unchanged list: no call.
    again = _submit(lifecycle, content_hash="h2")
    lifecycle.begin_attempt(again.id)
    assert lifecycle.finish_job(again.id, 3, written=["kb"], acl=SECRET.tokens(), reapply=reapply)
    assert reapplied == [(["kb"], SECRET.tokens())]
