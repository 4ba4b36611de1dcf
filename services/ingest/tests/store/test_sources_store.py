"""The sources' catalog on SQLite and PostgreSQL: schedules claimed once, one pending sync per
source, reports kept, ownership of files, and everything gone with its knowledge base."""

from __future__ import annotations

import time

import pytest

from services.common.errors import AlreadyExists, NotFound
from services.ingest.store.catalog import Catalog


def test_a_due_source_is_claimed_once_and_moved_on_by_its_interval(catalog: Catalog) -> None:
    catalog.knowledge_bases.create("kb", "", "")
    source = catalog.sources.create("kb", "docs", "directory", {"path": "docs"}, "", interval_s=60)
    catalog.sources.create("kb", "manual", "directory", {"path": "other"}, "", interval_s=0)
    assert catalog.sources.claim_due(time.time()) == []  # not due yet
    later = source.next_sync_at + 1
    claimed = catalog.sources.claim_due(later)
    assert [(run.source, run.trigger, run.state) for run in claimed] == [("docs", "schedule", "queued")]
    assert catalog.sources.claim_due(later) == []  # a second replica finds nothing to do
    assert catalog.sources.get("kb", "docs").next_sync_at == pytest.approx(later + 60)
    # Still pending when due again: that turn is skipped rather than queued twice.
    assert catalog.sources.claim_due(later + 61) == []


def test_one_pending_sync_per_source_and_its_report(catalog: Catalog) -> None:
    catalog.knowledge_bases.create("kb", "", "")
    catalog.sources.create("kb", "docs", "directory", {"path": "docs"}, "", 0)
    with pytest.raises(AlreadyExists):
        catalog.sources.create("kb", "docs", "directory", {"path": "docs"}, "", 0)
    first, new = catalog.sources.request_sync("kb", "docs")
    again, new_again = catalog.sources.request_sync("kb", "docs")
    assert new and not new_again and again.id == first.id
    claimed = catalog.sources.begin_run(first.id)
    assert claimed is not None and catalog.sources.begin_run(first.id) is None  # taken once
    report, source = claimed
    report.state, report.added, report.failed = "succeeded", ["a.md"], [("b.pdf", "encrypted")]
    catalog.sources.finish_run(report)
    latest = catalog.sources.run("kb", "docs")
    assert (latest.state, latest.added, latest.failed) == ("succeeded", ["a.md"], [("b.pdf", "encrypted")])
    catalog.sources.own(source, "a.md", "docs/a.md")
    assert catalog.sources.items(source.id) == {"a.md": "docs/a.md"}
    assert catalog.sources.owner("kb", "a.md") == source.id and catalog.sources.owner("kb", "x") is None


def test_sources_go_with_their_knowledge_base(catalog: Catalog) -> None:
    catalog.knowledge_bases.create("kb", "", "")
    source = catalog.sources.create("kb", "docs", "directory", {"path": "docs"}, "", 60)
    catalog.sources.own(source, "a.md", "a.md")
    catalog.sources.request_sync("kb", "docs")
    catalog.knowledge_bases.delete("kb")
    catalog.knowledge_bases.create("kb", "", "")
    assert catalog.sources.list("kb") == []
    assert catalog.sources.items(source.id) == {}
    with pytest.raises(NotFound):
        catalog.sources.run("kb", "docs")
