"""Migrations in the catalog, on SQLite and PostgreSQL: targets, the switch's conditions, stale
jobs, stale copies, abandon, and names that cannot collide."""

from __future__ import annotations

import pytest

from services.common.errors import AlreadyExists, FailedPrecondition
from services.common.names import next_collection
from services.ingest.jobs import JobLifecycle
from services.ingest.migration import NOTHING_TO_COPY, Migrations, StaleTargets, Target
from services.ingest.store.access import FileAccessList
from services.ingest.store.catalog import Catalog
from services.ingest.store.records import JobState

OLD, NEW = "model-old", "model-new"


@pytest.fixture
def migrations(catalog: Catalog) -> Migrations:
    catalog.knowledge_bases.create("kb", embed_model=OLD)
    return Migrations(catalog)


def _indexed(lifecycle: JobLifecycle, name: str, content_hash: str, chunks: int, written: list[str]) -> str:
    job = lifecycle.submit_file("kb", name, 10, content_hash, 250, 50)
    assert lifecycle.begin_attempt(job.id) is not None
    assert lifecycle.finish_job(job.id, chunks, swap=lambda _: None, written=written)
    return job.id


def test_a_migration_names_a_shadow_and_uploads_target_both(
    catalog: Catalog, lifecycle: JobLifecycle, migrations: Migrations
) -> None:
    assert migrations.targets("kb") == [Target("kb", OLD)]
    job = migrations.start("kb", NEW)
    assert (job.kind, job.embed_model, job.file_name, job.state) == ("migrate", NEW, "", JobState.QUEUED)
    assert migrations.targets("kb") == [Target("kb", OLD), Target("kb__v2", NEW, shadow=True)]
    kb = catalog.knowledge_bases.get("kb")
    assert (kb.collection, kb.migrating_to, kb.migration_job, kb.embed_model) == ("kb", NEW, job.id, OLD)
    with pytest.raises(FailedPrecondition, match="already migrating"):
        migrations.start("kb", "model-third")
    # A knowledge base may not take a name that is a collection already.
    with pytest.raises(AlreadyExists, match="vector collection of another"):
        catalog.knowledge_bases.create("kb__v2")


def test_a_claim_carries_the_targets_of_its_moment(lifecycle: JobLifecycle, migrations: Migrations) -> None:
    """The worker indexes where the claim says, so the claim must read the knowledge base as
    the claim's transaction sees it: one target before a migration, both during, the new
    collection alone after a switch."""
    before = lifecycle.submit_file("kb", "before.txt", 10, "h1", 250, 50)
    during = lifecycle.submit_file("kb", "during.txt", 10, "h2", 250, 50)
    [claim] = lifecycle.claim_jobs([before.id])
    assert claim is not None and claim.targets == (Target("kb", OLD),)
    job = migrations.start("kb", NEW)
    [claim] = lifecycle.claim_jobs([during.id])
    assert claim is not None and claim.targets == (Target("kb", OLD), Target("kb__v2", NEW, shadow=True))
    assert lifecycle.finish_job(before.id, 1, swap=lambda _: None, written=["kb"])
    assert lifecycle.finish_job(during.id, 1, swap=lambda _: None, written=["kb", "kb__v2"])
    lifecycle.begin_attempt(job.id)
    before_file = next(file for file in migrations.files("kb") if file.name == "before.txt")
    live = migrations.live_generation("kb", before_file)
    assert live is not None and migrations.mark_copied("kb", job.id, before_file, live.id, 1)
    assert isinstance(migrations.switch("kb", job.id), tuple)
    after = lifecycle.submit_file("kb", "after.txt", 10, "h3", 250, 50)
    [claim] = lifecycle.claim_jobs([after.id])
    assert claim is not None and claim.targets == (Target("kb__v2", NEW),)


def test_the_switch_waits_for_every_file_and_every_upload_then_moves_both_at_once(
    catalog: Catalog, lifecycle: JobLifecycle, migrations: Migrations
) -> None:
    copied_id = _indexed(lifecycle, "copied.txt", "h1", 4, ["kb"])
    failed_first = lifecycle.submit_file("kb", "broken.txt", 10, "h2", 250, 50)
    lifecycle.begin_attempt(failed_first.id)
    lifecycle.fail_job(failed_first.id, "unreadable")
    job = migrations.start("kb", NEW)
    lifecycle.begin_attempt(job.id)
    assert migrations.switch("kb", job.id) == "2 file(s) not yet in the new collection"

    files = {file.name: file for file in migrations.files("kb")}
    live = migrations.live_generation("kb", files["copied.txt"])
    assert live is not None and live.id == copied_id
    assert migrations.live_generation("kb", files["broken.txt"]) is None
    assert migrations.mark_copied("kb", job.id, files["copied.txt"], copied_id, 4)
    assert migrations.mark_copied("kb", job.id, files["broken.txt"], NOTHING_TO_COPY)

    # An upload during the migration that indexed into both collections counts as copied;
    # one still running holds the switch back.
    both = _indexed(lifecycle, "both.txt", "h3", 2, ["kb", "kb__v2"])
    assert {f.name: f.shadow_generation for f in migrations.files("kb")}["both.txt"] == both
    running = lifecycle.submit_file("kb", "late.txt", 10, "h4", 250, 50)
    assert migrations.switch("kb", job.id) == "waiting for 1 upload(s) in flight"
    lifecycle.cancel_job(running.id)
    lifecycle.delete_file("kb", "late.txt")

    assert migrations.switch("kb", job.id) == ("kb", "kb__v2")
    kb = catalog.knowledge_bases.get("kb")
    assert (kb.collection, kb.embed_model, kb.migrating_to, kb.migration_job) == ("kb__v2", NEW, "", "")
    assert kb.chunk_count == 4 + 2  # the file with nothing to copy arrives empty
    finished = catalog.jobs.get(job.id)
    assert (finished.state, finished.chunks, finished.progress) == (JobState.SUCCEEDED, 6, 1.0)
    assert migrations.targets("kb") == [Target("kb__v2", NEW)]
    assert next_collection("kb", "kb__v2") == "kb__v3"
    # The old collection is retired: dropped once due, unless a knowledge base took the name.
    assert migrations.due_retired() == ["kb"]
    migrations.forget_retired("kb")
    assert migrations.due_retired() == []


def test_a_job_that_indexed_only_into_a_switched_collection_cannot_finish(
    catalog: Catalog, lifecycle: JobLifecycle, migrations: Migrations
) -> None:
    job = migrations.start("kb", NEW)
    upload = lifecycle.submit_file("kb", "a.txt", 10, "h1", 250, 50)
    lifecycle.begin_attempt(upload.id)
    # Switching waits for it ...
    assert migrations.switch("kb", job.id) == "waiting for 1 upload(s) in flight"
    # ... but an upload that indexed only into the old collection and finishes after a switch
    # (forced here by abandoning and pointing the row elsewhere) must run again.
    assert migrations.abandon("kb", job.id) == "kb__v2"
    second = migrations.start("kb", NEW)
    assert second.id != job.id and migrations.targets("kb")[1].collection == "kb__v2"
    with pytest.raises(StaleTargets):
        lifecycle.finish_job(upload.id, 3, swap=lambda _: None, written=["elsewhere"])
    assert catalog.jobs.get(upload.id).state is JobState.PARSING  # nothing recorded
    # Indexed into the active collection only while a migration runs: the migration still
    # has to copy this generation (shadow_generation stays empty).
    assert lifecycle.finish_job(upload.id, 3, swap=lambda _: None, written=["kb"])
    assert {f.name: f.shadow_generation for f in migrations.files("kb")}["a.txt"] == ""


def test_a_stale_copy_is_not_marked_and_abandon_forgets_the_shadow(
    catalog: Catalog, lifecycle: JobLifecycle, migrations: Migrations
) -> None:
    first = _indexed(lifecycle, "a.txt", "h1", 3, ["kb"])
    job = migrations.start("kb", NEW)
    (read,) = migrations.files("kb")
    _indexed(lifecycle, "a.txt", "h2", 5, ["kb"])  # changed after the copy began
    assert not migrations.mark_copied("kb", job.id, read, first)
    assert migrations.abandon("kb", job.id) == "kb__v2"
    assert migrations.abandon("kb", job.id) is None  # once
    assert not migrations.mark_copied("kb", job.id, migrations.files("kb")[0], first)
    kb = catalog.knowledge_bases.get("kb")
    assert (kb.collection, kb.embed_model, kb.migrating_to) == ("kb", OLD, "")
    assert migrations.switch("kb", job.id) == "the migration was cancelled"
    with pytest.raises(FailedPrecondition, match="already uses"):
        migrations.start("kb", OLD)


def test_a_retired_name_in_use_again_is_not_dropped(catalog: Catalog, migrations: Migrations) -> None:
    job = migrations.start("kb", NEW)
    assert migrations.switch("kb", job.id, drop_delay_s=3600) == ("kb", "kb__v2")
    assert migrations.due_retired() == []  # not yet due
    later = migrations.start("kb", OLD)
    assert migrations.switch("kb", later.id) == ("kb__v2", "kb__v3")
    assert migrations.due_retired() == ["kb__v2"]
    catalog.knowledge_bases.delete("kb")
    catalog.knowledge_bases.create("kb__v2")  # free again, and taken by a new knowledge base
    assert migrations.due_retired() == []
    assert migrations.is_retired("kb__v2")  # (the ingest API drops it before such a create)


def test_access_list_changes_reach_every_collection_of_a_migrating_knowledge_base(
    catalog: Catalog, lifecycle: JobLifecycle, migrations: Migrations
) -> None:
    first = _indexed(lifecycle, "a.txt", "h1", 3, ["kb"])
    applied: list[tuple[list[str], list[str]]] = []

    def apply(collections: list[str], acl: list[str]) -> None:
        applied.append((collections, acl))

    secret = FileAccessList.of(groups=["finance"])
    lifecycle.set_access("kb", "a.txt", secret, apply)
    assert applied == [(["kb"], secret.tokens())]
    job = migrations.start("kb", NEW)
    lifecycle.set_access("kb", "a.txt", None, apply)  # the shadow too while it is filled
    assert applied[-1] == (["kb", "kb__v2"], secret.tokens())

    # A copy built with the list as it was before a change made meanwhile: recording it gives
    # the shadow's points the current list; a copy built with the current list needs nothing.
    (read,) = migrations.files("kb")
    opened = FileAccessList()
    lifecycle.set_access("kb", "a.txt", opened, lambda collections, acl: None)
    applied.clear()
    assert migrations.mark_copied("kb", job.id, read, first, 3, secret.tokens(), apply)
    assert applied == [(["kb__v2"], opened.tokens())]
    applied.clear()
    assert migrations.mark_copied("kb", job.id, read, first, 3, opened.tokens(), apply)
    assert applied == []

    # After the switch: the new collection, and the old one until it is dropped (a search that
    # read the record just before the switch may still read it).
    assert migrations.switch("kb", job.id) == ("kb", "kb__v2")
    lifecycle.set_access("kb", "a.txt", secret, apply)
    assert applied[-1] == (["kb__v2", "kb"], secret.tokens())
    migrations.forget_retired("kb")
    lifecycle.set_access("kb", "a.txt", None, apply)
    assert applied[-1] == (["kb__v2"], secret.tokens())
