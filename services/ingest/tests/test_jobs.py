"""Jobs in the catalog, on SQLite and PostgreSQL: idempotent uploads, cancel, list, leases, sweep."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.ingest.jobs import Finish, JobLifecycle, LeaseKeeper, Progress
from services.ingest.migration import Migrations
from services.ingest.store.catalog import Catalog
from services.ingest.store.records import JobState


def _submit(lifecycle: JobLifecycle, content_hash: str = "h1", **options: Any):
    return lifecycle.submit_file("kb", "a.txt", 10, content_hash, 250, 50, "req", **options)


def _finish(lifecycle: JobLifecycle, job_id: str, chunks: int = 3) -> None:
    assert lifecycle.begin_attempt(job_id, lease_s=30) is not None
    assert lifecycle.finish_job(job_id, chunks)


def test_identical_content_is_a_noop_unless_overridden(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    first = _submit(lifecycle)
    assert not first.unchanged
    again = _submit(lifecycle)  # still queued: the same job answers
    assert again.unchanged and again.id == first.id
    _finish(lifecycle, first.id)
    done = _submit(lifecycle)
    assert done.unchanged and done.id == first.id and done.state is JobState.SUCCEEDED
    assert [job.id for job in catalog.jobs.list("kb")] == [first.id]  # nothing new recorded
    forced = _submit(lifecycle, override=True, splitter="markdown", title_enhance=True)
    assert not forced.unchanged and forced.id != first.id
    assert (forced.splitter, forced.title_enhance) == ("markdown", True)
    # The file keeps the old count until the new job finishes.
    assert catalog.files.get("kb", "a.txt").chunks == 3
    changed = _submit(lifecycle, content_hash="h2")
    assert not changed.unchanged
    assert catalog.jobs.get(forced.id).state is JobState.CANCELLED  # superseded


def test_a_failed_file_is_ingested_again_on_identical_upload(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    first = _submit(lifecycle)
    lifecycle.begin_attempt(first.id)
    lifecycle.fail_job(first.id, "boom")
    again = _submit(lifecycle)
    assert not again.unchanged and again.id != first.id


def test_jobs_are_listed_newest_first_and_can_be_cancelled(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    ids = []
    for n in range(3):
        ids.append(lifecycle.submit_file("kb", f"f{n}.txt", 1, f"h{n}", 250, 50).id)
        time.sleep(0.01)
    assert [job.id for job in catalog.jobs.list("kb")] == ids[::-1]
    assert [job.id for job in catalog.jobs.list("kb", limit=2)] == ids[:0:-1]
    cancelled = lifecycle.cancel_job(ids[0])
    assert cancelled.state is JobState.CANCELLED and cancelled.error == "cancelled by request"
    assert catalog.files.get("kb", "f0.txt").state is JobState.CANCELLED
    assert lifecycle.begin_attempt(ids[0]) is None  # a worker that gets it later does nothing
    _finish(lifecycle, ids[1])
    assert lifecycle.cancel_job(ids[1]).state is JobState.SUCCEEDED  # finished jobs stay as they are


def test_a_leased_job_is_claimed_once_and_recovered_after_its_worker_dies(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    claimed = lifecycle.begin_attempt(job.id, lease_s=0.5)
    assert claimed is not None and claimed.attempts == 1 and claimed.lease_until > time.time()
    assert lifecycle.begin_attempt(job.id, lease_s=0.5) is None  # a duplicate delivery while it runs
    assert lifecycle.advance(job.id, JobState.EMBEDDING, 0.3)
    assert lifecycle.renew_leases([job.id], lease_s=0.5) == {job.id}
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=3600) == []  # lease still valid
    time.sleep(0.7)  # no heartbeat: the worker is gone
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=3600) == [job.id]
    lost = catalog.jobs.get(job.id)
    assert lost.state is JobState.QUEUED and lost.progress == 0
    assert "stopped answering" in lost.error and lost.error.endswith("re-queued")
    assert catalog.files.get("kb", "a.txt").state is JobState.QUEUED
    again = lifecycle.begin_attempt(job.id, lease_s=0.2)
    assert again is not None and again.attempts == 2
    time.sleep(0.4)
    # An expired lease may also be claimed directly (Redis redelivering before the sweep).
    third = lifecycle.begin_attempt(job.id, lease_s=0.2)
    assert third is not None and third.attempts == 3
    time.sleep(0.4)
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=3600) == []
    gave_up = catalog.jobs.get(job.id)
    assert gave_up.state is JobState.FAILED and "gave up after 3 attempts" in gave_up.error
    assert catalog.files.get("kb", "a.txt").error == gave_up.error


def test_attempts_that_ended_waiting_for_a_dependency_are_not_counted_as_crashes(
    catalog: Catalog,
    lifecycle: JobLifecycle,
) -> None:
    """max_attempts bounds attempts lost to dead workers; an outage's waits must not use them up."""
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    for _ in range(3):
        assert lifecycle.begin_attempt(job.id, lease_s=0.2) is not None
        assert lifecycle.requeue_waiting(
            job.id, "retrieve service: failed to connect", "retrieve", time.time()
        )
    assert lifecycle.begin_attempt(job.id, lease_s=0.2) is not None  # attempt 4: its worker dies
    time.sleep(0.3)
    assert lifecycle.sweep(max_attempts=2, queued_redeliver_s=3600) == [job.id]
    assert catalog.jobs.get(job.id).state is JobState.QUEUED
    assert lifecycle.begin_attempt(job.id, lease_s=0.2) is not None  # attempt 5: dies too
    time.sleep(0.3)
    assert lifecycle.sweep(max_attempts=2, queued_redeliver_s=3600) == []
    gave_up = catalog.jobs.get(job.id)
    assert gave_up.state is JobState.FAILED and "gave up after 5 attempts" in gave_up.error


def test_a_waiting_job_is_published_again_only_well_past_its_next_try(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    lifecycle.begin_attempt(job.id)
    assert lifecycle.requeue_waiting(job.id, "embed service: down", "embed", time.time() + 0.6)
    time.sleep(0.3)
    # Its message is held back until the next try: not lost, even though the row is quiet.
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=0.2) == []
    time.sleep(0.6)
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=0.2) == [job.id]


def test_long_queued_jobs_are_published_again(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=60) == []
    time.sleep(0.3)
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=0.2) == [job.id]
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=0.2) == []  # once per period


def test_finish_runs_the_swap_only_while_the_job_owns_the_file(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    old = _submit(lifecycle)
    lifecycle.begin_attempt(old.id)
    newer = _submit(lifecycle, content_hash="h2")  # supersedes the running job
    swaps: list[str] = []
    assert not lifecycle.finish_job(old.id, 5, swap=lambda _: swaps.append(old.id))
    assert swaps == []
    lifecycle.begin_attempt(newer.id)

    def broken(_: list[str]) -> None:
        raise RuntimeError("retrieve went away")

    with pytest.raises(RuntimeError):
        lifecycle.finish_job(newer.id, 4, swap=broken)
    assert catalog.jobs.get(newer.id).state is JobState.PARSING  # nothing recorded
    assert lifecycle.finish_job(newer.id, 4, swap=lambda _: swaps.append(newer.id))
    assert swaps == [newer.id] and catalog.files.get("kb", "a.txt").chunks == 4


def test_columns_added_later_are_created_on_an_old_database(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    from sqlalchemy import text

    with catalog.engine.begin() as connection:
        for column in ("lease_until", "retries", "retry_at", "waiting_for", "waiting_since"):
            connection.execute(text(f"ALTER TABLE jobs DROP COLUMN {column}"))
    catalog.create_schema()
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    assert (job.lease_until, job.retries, job.retry_at, job.waiting_for) == (0.0, 0, 0.0, "")


def test_long_queued_jobs_behind_a_backlog_are_not_published_again(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    time.sleep(0.3)
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=0.2, queue_empty=False) == []
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=0.2, queue_empty=True) == [job.id]


def test_a_job_ended_while_running_is_cleaned_up_once_its_lease_lapses(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    """A running job that is cancelled, superseded or given up keeps its lease until its worker
    removed what it indexed (release_lease); if that worker died, the sweeper finds it."""
    catalog.knowledge_bases.create("kb")
    queued = _submit(lifecycle)
    lifecycle.cancel_job(queued.id)  # never ran: nothing indexed, nothing to clean
    # Leases long enough that the steps before the first check fit in them on a busy machine.
    running = _submit(lifecycle, content_hash="h2")
    lifecycle.begin_attempt(running.id, lease_s=2.0)
    lifecycle.cancel_job(running.id)
    superseded = _submit(lifecycle, content_hash="h3")
    lifecycle.begin_attempt(superseded.id, lease_s=2.0)
    newest = _submit(lifecycle, content_hash="h4")  # supersedes the running job
    _finish(lifecycle, newest.id)  # succeeded: never a cleanup
    assert lifecycle.lapsed_cleanups() == []  # the leases still run: their workers may clean up
    time.sleep(2.1)
    assert sorted(lifecycle.lapsed_cleanups()) == sorted(
        [(running.id, "kb", "a.txt"), (superseded.id, "kb", "a.txt")]
    )
    lifecycle.release_lease(running.id)
    lifecycle.release_lease(newest.id)  # a no-op on a succeeded job
    assert lifecycle.lapsed_cleanups() == [(superseded.id, "kb", "a.txt")]
    assert catalog.jobs.get(newest.id).state is JobState.SUCCEEDED


def test_a_job_given_up_by_the_sweeper_is_cleaned_up(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    lifecycle.begin_attempt(job.id, lease_s=0.1)
    time.sleep(0.2)
    assert lifecycle.sweep(max_attempts=1, queued_redeliver_s=3600) == []
    assert catalog.jobs.get(job.id).state is JobState.FAILED
    assert lifecycle.lapsed_cleanups() == [(job.id, "kb", "a.txt")]


def test_claims_in_one_transaction_take_each_job_once(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    jobs = [lifecycle.submit_file("kb", f"f{n}.txt", 1, f"h{n}", 250, 50).id for n in range(4)]
    lifecycle.cancel_job(jobs[2])
    claimed = lifecycle.begin_attempts([jobs[0], jobs[1], jobs[2], "no-such-job", jobs[3]], lease_s=30)
    assert [None if job is None else job.id for job in claimed] == [jobs[0], jobs[1], None, None, jobs[3]]
    assert all(job is None or (job.attempts, job.state) == (1, JobState.PARSING) for job in claimed)
    assert catalog.jobs.get(jobs[0]).state is JobState.PARSING
    assert catalog.files.get("kb", "f1.txt").state is JobState.PARSING
    # Held by a live worker now: a duplicate delivery claims nothing.
    assert lifecycle.begin_attempts([jobs[0], jobs[3]], lease_s=30) == [None, None]


def test_first_jobs_finish_together_and_the_others_are_left_to_finish_job(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    first = lifecycle.submit_file("kb", "new.txt", 1, "h1", 250, 50).id
    _finish(lifecycle, lifecycle.submit_file("kb", "again.txt", 1, "old", 250, 50).id, chunks=7)
    reupload = lifecycle.submit_file("kb", "again.txt", 1, "new", 250, 50).id
    acl_changed = lifecycle.submit_file("kb", "acl.txt", 1, "h3", 250, 50).id
    cancelled = lifecycle.submit_file("kb", "gone.txt", 1, "h4", 250, 50).id
    lifecycle.begin_attempts([first, reupload, acl_changed, cancelled], lease_s=30)
    lifecycle.cancel_job(cancelled)
    finishes = [
        Finish(first, 3, "model-a", ("*",), ("kb",)),
        Finish(reupload, 4, "model-a", ("*",), ("kb",)),  # an earlier generation to drop
        Finish(acl_changed, 5, "model-a", ("user:u_1",), ("kb",)),  # a list changed since
        Finish(cancelled, 6, "model-a", ("*",), ("kb",)),
    ]
    assert lifecycle.finish_first_jobs(finishes) == [True, None, None, False]
    assert (catalog.jobs.get(first).state, catalog.jobs.get(first).chunks) == (JobState.SUCCEEDED, 3)
    assert catalog.files.get("kb", "new.txt").chunks == 3
    assert catalog.files.get("kb", "new.txt").state is JobState.SUCCEEDED
    # Left untouched for finish_job (which drops and re-applies through the retrieve service).
    assert catalog.jobs.get(reupload).state is JobState.PARSING
    assert catalog.files.get("kb", "again.txt").chunks == 7
    assert catalog.jobs.get(acl_changed).state is JobState.PARSING
    assert catalog.jobs.get(cancelled).state is JobState.CANCELLED
    assert catalog.knowledge_bases.get("kb").embed_model == "model-a"


def test_jobs_of_a_migrating_or_switched_knowledge_base_are_left_to_finish_job(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    """The set-wise finish skips Migrations.check_finish, so it takes no job whose knowledge
    base runs a migration (the shadow generation must be recorded) or that did not write the
    active collection (StaleTargets must redo it); the plain job next to them still finishes."""
    catalog.knowledge_bases.create("kb")
    catalog.knowledge_bases.create("other")
    plain = lifecycle.submit_file("kb", "plain.txt", 1, "h1", 250, 50).id
    no_collections = lifecycle.submit_file("kb", "none.txt", 1, "h2", 250, 50).id
    wrong_collection = lifecycle.submit_file("kb", "wrong.txt", 1, "h3", 250, 50).id
    migrating = lifecycle.submit_file("other", "m.txt", 1, "h4", 250, 50).id
    jobs = [plain, no_collections, wrong_collection, migrating]
    lifecycle.begin_attempts(jobs, lease_s=30)
    Migrations(catalog).start("other", "model-new")
    finishes = [
        Finish(plain, 1, "", ("*",), ("kb",)),
        Finish(no_collections, 1, "", ("*",)),
        Finish(wrong_collection, 1, "", ("*",), ("kb__v2",)),
        Finish(migrating, 1, "", ("*",), ("other", "other__v2")),
    ]
    assert lifecycle.finish_first_jobs(finishes) == [True, None, None, None]
    assert [catalog.jobs.get(job).state for job in jobs] == [
        JobState.SUCCEEDED,
        JobState.PARSING,
        JobState.PARSING,
        JobState.PARSING,
    ]
    # finish_job records what the migration needs: the file is in the shadow already.
    assert lifecycle.finish_job(migrating, 1, written=["other", "other__v2"])
    [state] = Migrations(catalog).files("other")
    assert (state.name, state.state, state.shadow_generation) == ("m.txt", JobState.SUCCEEDED, migrating)


def test_progress_reports_of_many_jobs_go_in_one_write(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    """Each report lands as advance or set_progress would write it: a new stage moves the job
    and its file, a progress-only report leaves both stages, a cancelled job answers False and
    is left as it is, and of two reports for one job the later wins."""
    catalog.knowledge_bases.create("kb")
    moving, creeping, cancelled = (
        lifecycle.submit_file("kb", f"{name}.txt", 10, name, 250, 50).id for name in ("m", "c", "x")
    )
    lifecycle.begin_attempts([moving, creeping, cancelled], lease_s=30)
    lifecycle.cancel_job(cancelled)
    answers = lifecycle.report_progress(
        [
            Progress(moving, 0.2, JobState.EMBEDDING),
            Progress(creeping, 0.4),
            Progress(cancelled, 0.5, JobState.INDEXING),
            Progress(moving, 0.6, JobState.INDEXING),
        ]
    )
    assert answers == [True, True, False, True]
    states = {job_id: catalog.jobs.get(job_id) for job_id in (moving, creeping, cancelled)}
    assert states[moving].state is JobState.INDEXING and states[moving].progress == pytest.approx(0.6)
    assert states[creeping].state is JobState.PARSING and states[creeping].progress == pytest.approx(0.4)
    assert states[cancelled].state is JobState.CANCELLED
    files = {name: catalog.files.get("kb", f"{name}.txt").state for name in ("m", "c", "x")}
    assert files == {"m": JobState.INDEXING, "c": JobState.PARSING, "x": JobState.CANCELLED}
    # In the worker's combined write, beside a claim and a success.
    fresh = lifecycle.submit_file("kb", "f.txt", 10, "f", 250, 50).id
    claimed, finished, reported = lifecycle.claim_and_finish(
        [fresh], 30, [Finish(creeping, 2, "model-a", ("*",), ("kb",))], [Progress(moving, 0.9)]
    )
    assert claimed[0] is not None and finished == [True] and reported == [True]
    assert catalog.jobs.get(moving).progress == pytest.approx(0.9)
    assert catalog.jobs.get(creeping).state is JobState.SUCCEEDED


def test_leases_of_many_jobs_are_renewed_in_one_write_while_they_run(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    running, done, queued, cancelled = (
        lifecycle.submit_file("kb", f"{name}.txt", 10, name, 250, 50, "req").id
        for name in ("running", "done", "queued", "cancelled")
    )
    for job_id in (running, done, cancelled):
        assert lifecycle.begin_attempt(job_id, lease_s=5) is not None
    assert lifecycle.finish_job(done, 2)
    lifecycle.cancel_job(cancelled)
    before = catalog.jobs.get(running).lease_until
    assert lifecycle.renew_leases([running, done, queued, cancelled, "no-such-job"], lease_s=60) == {running}
    assert catalog.jobs.get(running).lease_until > before + 50
    assert catalog.jobs.get(queued).state is JobState.QUEUED  # not claimed by a renewal


def test_the_lease_keeper_renews_held_jobs_until_they_end_or_are_let_go(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    first, second = (
        lifecycle.submit_file("kb", f"{name}.txt", 10, name, 250, 50, "req").id for name in ("a", "b")
    )
    rounds: list[list[str]] = []

    def renew(job_ids: list[str]) -> set[str]:
        rounds.append(job_ids)
        return lifecycle.renew_leases(job_ids, lease_s=0.4)

    for job_id in (first, second):
        assert lifecycle.begin_attempt(job_id, lease_s=0.4) is not None
    keeper = LeaseKeeper(renew, lease_s=0.4)  # a round every 0.1 s
    try:
        with keeper.hold(first), keeper.hold(second):
            time.sleep(0.7)  # past the claims' leases: only renewals keep the jobs
            assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=3600) == []
            assert any(set(ids) == {first, second} for ids in rounds)  # both in one write
            lifecycle.cancel_job(second)
            time.sleep(0.3)
            assert keeper.held() == {first}  # the cancelled job is no longer renewed
            assert catalog.jobs.get(first).lease_until > time.time()
        assert keeper.held() == set()
        rounds.clear()
        time.sleep(0.3)
        assert rounds == []  # nothing held: no writes
    finally:
        keeper.close()
    time.sleep(0.5)  # the worker is gone: its job's lease lapses and the sweeper takes it back
    assert lifecycle.sweep(max_attempts=3, queued_redeliver_s=3600) == [first]


def test_the_lease_keeper_lives_on_after_a_failed_round() -> None:
    rounds: list[list[str]] = []

    def renew(job_ids: list[str]) -> set[str]:
        rounds.append(job_ids)
        if len(rounds) == 1:
            raise RuntimeError("the catalog is gone for a moment")
        return set(job_ids)

    keeper = LeaseKeeper(renew, lease_s=0.2)  # a round every 0.05 s
    try:
        with keeper.hold("job"):
            deadline = time.monotonic() + 5
            while len(rounds) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(rounds) >= 3 and keeper.held() == {"job"}  # renewed again after the failure
    finally:
        keeper.close()
