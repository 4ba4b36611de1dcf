"""Jobs in the catalog, on SQLite and PostgreSQL: idempotent uploads, cancel, list, leases, sweep."""

from __future__ import annotations

import time

import pytest

from services.ingest.catalog import Catalog
from services.ingest.models import JobState


def _submit(catalog: Catalog, content_hash: str = "h1", **options: object):
    return catalog.submit_file("kb", "a.txt", 10, content_hash, 250, 50, "req", **options)  # type: ignore[arg-type]


def _finish(catalog: Catalog, job_id: str, chunks: int = 3) -> None:
    assert catalog.begin_attempt(job_id, lease_s=30) is not None
    assert catalog.finish_job(job_id, chunks)


def test_identical_content_is_a_noop_unless_overridden(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    first = _submit(catalog)
    assert not first.unchanged
    again = _submit(catalog)  # still queued: the same job answers
    assert again.unchanged and again.id == first.id
    _finish(catalog, first.id)
    done = _submit(catalog)
    assert done.unchanged and done.id == first.id and done.state is JobState.SUCCEEDED
    assert [job.id for job in catalog.list_jobs("kb")] == [first.id]  # nothing new recorded
    forced = _submit(catalog, override=True, splitter="markdown", title_enhance=True)
    assert not forced.unchanged and forced.id != first.id
    assert (forced.splitter, forced.title_enhance) == ("markdown", True)
    # The file keeps the old count until the new job finishes.
    assert catalog.get_file("kb", "a.txt").chunks == 3
    changed = _submit(catalog, content_hash="h2")
    assert not changed.unchanged
    assert catalog.get_job(forced.id).state is JobState.CANCELLED  # superseded


def test_a_failed_file_is_ingested_again_on_identical_upload(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    first = _submit(catalog)
    catalog.begin_attempt(first.id)
    catalog.fail_job(first.id, "boom")
    again = _submit(catalog)
    assert not again.unchanged and again.id != first.id


def test_jobs_are_listed_newest_first_and_can_be_cancelled(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    ids = []
    for n in range(3):
        ids.append(catalog.submit_file("kb", f"f{n}.txt", 1, f"h{n}", 250, 50).id)
        time.sleep(0.01)
    assert [job.id for job in catalog.list_jobs("kb")] == ids[::-1]
    assert [job.id for job in catalog.list_jobs("kb", limit=2)] == ids[:0:-1]
    cancelled = catalog.cancel_job(ids[0])
    assert cancelled.state is JobState.CANCELLED and cancelled.error == "cancelled by request"
    assert catalog.get_file("kb", "f0.txt").state is JobState.CANCELLED
    assert catalog.begin_attempt(ids[0]) is None  # a worker that gets it later does nothing
    _finish(catalog, ids[1])
    assert catalog.cancel_job(ids[1]).state is JobState.SUCCEEDED  # finished jobs stay as they are


def test_a_leased_job_is_claimed_once_and_recovered_after_its_worker_dies(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    job = _submit(catalog)
    claimed = catalog.begin_attempt(job.id, lease_s=0.5)
    assert claimed is not None and claimed.attempts == 1 and claimed.lease_until > time.time()
    assert catalog.begin_attempt(job.id, lease_s=0.5) is None  # a duplicate delivery while it runs
    assert catalog.advance(job.id, JobState.EMBEDDING, 0.3)
    assert catalog.heartbeat(job.id, lease_s=0.5)
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=3600) == []  # lease still valid
    time.sleep(0.7)  # no heartbeat: the worker is gone
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=3600) == [job.id]
    lost = catalog.get_job(job.id)
    assert lost.state is JobState.QUEUED and lost.progress == 0
    assert "stopped answering" in lost.error and lost.error.endswith("re-queued")
    assert catalog.get_file("kb", "a.txt").state is JobState.QUEUED
    again = catalog.begin_attempt(job.id, lease_s=0.2)
    assert again is not None and again.attempts == 2
    time.sleep(0.4)
    # An expired lease may also be claimed directly (Redis redelivering before the sweep).
    third = catalog.begin_attempt(job.id, lease_s=0.2)
    assert third is not None and third.attempts == 3
    time.sleep(0.4)
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=3600) == []
    gave_up = catalog.get_job(job.id)
    assert gave_up.state is JobState.FAILED and "gave up after 3 attempts" in gave_up.error
    assert catalog.get_file("kb", "a.txt").error == gave_up.error


def test_attempts_that_ended_waiting_for_a_dependency_are_not_counted_as_crashes(
    catalog: Catalog,
) -> None:
    """max_attempts bounds attempts lost to dead workers; an outage's waits must not use them up."""
    catalog.create_kb("kb")
    job = _submit(catalog)
    for _ in range(3):
        assert catalog.begin_attempt(job.id, lease_s=0.2) is not None
        assert catalog.requeue_waiting(job.id, "retrieve service: failed to connect", "retrieve", time.time())
    assert catalog.begin_attempt(job.id, lease_s=0.2) is not None  # attempt 4: its worker dies
    time.sleep(0.3)
    assert catalog.sweep(max_attempts=2, queued_redeliver_s=3600) == [job.id]
    assert catalog.get_job(job.id).state is JobState.QUEUED
    assert catalog.begin_attempt(job.id, lease_s=0.2) is not None  # attempt 5: dies too
    time.sleep(0.3)
    assert catalog.sweep(max_attempts=2, queued_redeliver_s=3600) == []
    gave_up = catalog.get_job(job.id)
    assert gave_up.state is JobState.FAILED and "gave up after 5 attempts" in gave_up.error


def test_a_waiting_job_is_published_again_only_well_past_its_next_try(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    job = _submit(catalog)
    catalog.begin_attempt(job.id)
    assert catalog.requeue_waiting(job.id, "embed service: down", "embed", time.time() + 0.6)
    time.sleep(0.3)
    # Its message is held back until the next try: not lost, even though the row is quiet.
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=0.2) == []
    time.sleep(0.6)
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=0.2) == [job.id]


def test_long_queued_jobs_are_published_again(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    job = _submit(catalog)
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=60) == []
    time.sleep(0.3)
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=0.2) == [job.id]
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=0.2) == []  # once per period


def test_finish_runs_the_swap_only_while_the_job_owns_the_file(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    old = _submit(catalog)
    catalog.begin_attempt(old.id)
    newer = _submit(catalog, content_hash="h2")  # supersedes the running job
    swaps: list[str] = []
    assert not catalog.finish_job(old.id, 5, swap=lambda: swaps.append(old.id))
    assert swaps == []
    catalog.begin_attempt(newer.id)

    def broken() -> None:
        raise RuntimeError("retrieve went away")

    with pytest.raises(RuntimeError):
        catalog.finish_job(newer.id, 4, swap=broken)
    assert catalog.get_job(newer.id).state is JobState.PARSING  # nothing recorded
    assert catalog.finish_job(newer.id, 4, swap=lambda: swaps.append(newer.id))
    assert swaps == [newer.id] and catalog.get_file("kb", "a.txt").chunks == 4


def test_columns_added_later_are_created_on_an_old_database(catalog: Catalog) -> None:
    from sqlalchemy import text

    with catalog.engine.begin() as connection:
        for column in ("lease_until", "retries", "retry_at", "waiting_for", "waiting_since"):
            connection.execute(text(f"ALTER TABLE jobs DROP COLUMN {column}"))
    catalog.create_schema()
    catalog.create_kb("kb")
    job = _submit(catalog)
    assert (job.lease_until, job.retries, job.retry_at, job.waiting_for) == (0.0, 0, 0.0, "")


def test_long_queued_jobs_behind_a_backlog_are_not_published_again(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    job = _submit(catalog)
    time.sleep(0.3)
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=0.2, queue_empty=False) == []
    assert catalog.sweep(max_attempts=3, queued_redeliver_s=0.2, queue_empty=True) == [job.id]


def test_a_job_ended_while_running_is_cleaned_up_once_its_lease_lapses(catalog: Catalog) -> None:
    """A running job that is cancelled, superseded or given up keeps its lease until its worker
    removed what it indexed (release_lease); if that worker died, the sweeper finds it."""
    catalog.create_kb("kb")
    queued = _submit(catalog)
    catalog.cancel_job(queued.id)  # never ran: nothing indexed, nothing to clean
    running = _submit(catalog, content_hash="h2")
    catalog.begin_attempt(running.id, lease_s=0.3)
    catalog.cancel_job(running.id)
    superseded = _submit(catalog, content_hash="h3")
    catalog.begin_attempt(superseded.id, lease_s=0.3)
    newest = _submit(catalog, content_hash="h4")  # supersedes the running job
    _finish(catalog, newest.id)  # succeeded: never a cleanup
    assert catalog.lapsed_cleanups() == []  # the leases still run: their workers may clean up
    time.sleep(0.4)
    assert sorted(catalog.lapsed_cleanups()) == sorted(
        [(running.id, "kb", "a.txt"), (superseded.id, "kb", "a.txt")]
    )
    catalog.release_lease(running.id)
    catalog.release_lease(newest.id)  # a no-op on a succeeded job
    assert catalog.lapsed_cleanups() == [(superseded.id, "kb", "a.txt")]
    assert catalog.get_job(newest.id).state is JobState.SUCCEEDED


def test_a_job_given_up_by_the_sweeper_is_cleaned_up(catalog: Catalog) -> None:
    catalog.create_kb("kb")
    job = _submit(catalog)
    catalog.begin_attempt(job.id, lease_s=0.1)
    time.sleep(0.2)
    assert catalog.sweep(max_attempts=1, queued_redeliver_s=3600) == []
    assert catalog.get_job(job.id).state is JobState.FAILED
    assert catalog.lapsed_cleanups() == [(job.id, "kb", "a.txt")]
