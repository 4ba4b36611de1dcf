"""The catalog on SQLite and on the real PostgreSQL: same code, same answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from services.common.errors import AlreadyExists, NotFound
from services.ingest.jobs import JobLifecycle
from services.ingest.store.catalog import Catalog
from services.ingest.store.records import JobState


def _submit(lifecycle: JobLifecycle, kb: str = "kb", name: str = "a.txt", content_hash: str = "h1"):
    return lifecycle.submit_file(kb, name, 10, content_hash, 250, 50, "req-1")


def test_knowledge_bases_are_created_listed_and_deleted(catalog: Catalog) -> None:
    created = catalog.knowledge_bases.create("知识库", "中文描述", "model-x")
    assert created.name == "知识库"
    catalog.knowledge_bases.create("another")
    with pytest.raises(AlreadyExists, match="知识库"):
        catalog.knowledge_bases.create("知识库")
    assert [kb.name for kb in catalog.knowledge_bases.list()] == sorted(["another", "知识库"])
    got = catalog.knowledge_bases.get("知识库")
    assert (got.description, got.embed_model, got.file_count, got.chunk_count) == (
        "中文描述",
        "model-x",
        0,
        0,
    )
    assert got.created_at > 0
    catalog.knowledge_bases.delete("知识库")
    with pytest.raises(NotFound, match="知识库"):
        catalog.knowledge_bases.get("知识库")
    with pytest.raises(NotFound):
        catalog.knowledge_bases.delete("知识库")
    assert [kb.name for kb in catalog.knowledge_bases.list()] == ["another"]


def test_submit_creates_a_queued_job_and_file(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    assert job.state is JobState.QUEUED
    assert (job.knowledge_base, job.file_name, job.chunk_size, job.chunk_overlap) == ("kb", "a.txt", 250, 50)
    assert catalog.jobs.get(job.id) == job
    (file,) = catalog.files.list("kb")
    assert (file.name, file.size, file.content_hash, file.state, file.job_id) == (
        "a.txt",
        10,
        "h1",
        JobState.QUEUED,
        job.id,
    )
    with pytest.raises(NotFound, match="nope"):
        lifecycle.submit_file("nope", "a.txt", 1, "h", 250, 50)


def test_a_job_runs_through_its_states_and_counts_chunks(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    claimed = lifecycle.begin_attempt(job.id)
    assert claimed is not None and claimed.attempts == 1 and claimed.state is JobState.PARSING
    assert lifecycle.advance(job.id, JobState.EMBEDDING, 0.3)
    assert catalog.files.get("kb", "a.txt").state is JobState.EMBEDDING
    assert lifecycle.set_progress(job.id, 0.5)
    assert catalog.jobs.get(job.id).progress == pytest.approx(0.5)
    assert lifecycle.finish_job(job.id, 7, "model-y")
    done = catalog.jobs.get(job.id)
    assert (done.state, done.chunks, done.progress) == (JobState.SUCCEEDED, 7, 1.0)
    kb = catalog.knowledge_bases.get("kb")
    assert (kb.file_count, kb.chunk_count, kb.embed_model) == (1, 7, "model-y")
    # Finished jobs are not claimed again (a redelivered task does nothing).
    assert lifecycle.begin_attempt(job.id) is None
    assert not lifecycle.advance(job.id, JobState.INDEXING, 0.9)


def test_failure_keeps_the_reason_on_job_and_file(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    lifecycle.begin_attempt(job.id)
    assert lifecycle.fail_job(job.id, "a.txt: not a text file")
    assert catalog.jobs.get(job.id).error == "a.txt: not a text file"
    file = catalog.files.get("kb", "a.txt")
    assert (file.state, file.error, file.chunks) == (JobState.FAILED, "a.txt: not a text file", 0)
    assert catalog.jobs.counts()[JobState.FAILED] == 1


def test_a_job_waiting_for_a_dependency_says_what_for_until_its_next_try(
    catalog: Catalog, lifecycle: JobLifecycle
) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    lifecycle.begin_attempt(job.id)
    due = time.time() + 40
    assert lifecycle.requeue_waiting(job.id, "retrieve service: failed to connect", "retrieve", due)
    waiting = catalog.jobs.get(job.id)
    assert waiting.state is JobState.QUEUED and waiting.waiting and waiting.retries == 1
    assert waiting.status_text(now=due - 40) == (
        "waiting for retrieve (attempt 1, next try in 40 s): retrieve service: failed to connect"
    )
    assert waiting.status_text(now=due + 5).startswith("waiting for retrieve (attempt 1, next try now)")
    assert waiting.to_pb().error.startswith("waiting for retrieve (attempt 1, next try in ")
    assert catalog.files.get("kb", "a.txt").state is JobState.QUEUED
    started_waiting = waiting.waiting_since
    assert 0 < started_waiting <= time.time()
    again = lifecycle.begin_attempt(job.id)
    assert again is not None and again.attempts == 2 and again.error == "" and not again.waiting
    assert again.to_pb().error == ""
    assert lifecycle.requeue_waiting(job.id, "embed service: overloaded", "embed", due + 80)
    later = catalog.jobs.get(job.id)
    # The give-up window runs from the first wait; the text names the latest dependency.
    assert later.retries == 2 and later.waiting_since == started_waiting
    assert later.status_text(now=due).startswith("waiting for embed (attempt 2, next try in 80 s)")
    lifecycle.cancel_job(job.id)
    assert not lifecycle.requeue_waiting(job.id, "late", "embed", due)  # a cancelled job stays so
    assert catalog.jobs.get(job.id).status_text() == "cancelled by request"


def test_a_newer_upload_cancels_the_older_job(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    old = _submit(lifecycle, content_hash="old")
    lifecycle.begin_attempt(old.id)
    new = _submit(lifecycle, content_hash="new")
    cancelled = catalog.jobs.get(old.id)
    assert cancelled.state is JobState.CANCELLED and new.id in cancelled.error
    # The superseded worker can no longer move its job or touch the file row.
    assert not lifecycle.advance(old.id, JobState.INDEXING, 0.8)
    assert not lifecycle.finish_job(old.id, 99)
    file = catalog.files.get("kb", "a.txt")
    assert (file.content_hash, file.job_id, file.chunks, file.state) == ("new", new.id, 0, JobState.QUEUED)
    assert len(catalog.files.list("kb")) == 1


def test_deleting_a_file_cancels_its_job(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    job = _submit(lifecycle)
    lifecycle.delete_file("kb", "a.txt")
    assert catalog.files.find("kb", "a.txt") is None
    assert catalog.jobs.get(job.id).state is JobState.CANCELLED
    with pytest.raises(NotFound, match=r"a\.txt"):
        lifecycle.delete_file("kb", "a.txt")


def test_deleting_a_kb_removes_its_files_and_jobs(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    catalog.knowledge_bases.create("other")
    job = _submit(lifecycle)
    kept = _submit(lifecycle, kb="other")
    catalog.knowledge_bases.delete("kb")
    assert catalog.jobs.find(job.id) is None
    assert lifecycle.begin_attempt(job.id) is None
    assert catalog.jobs.get(kept.id).knowledge_base == "other"
    catalog.knowledge_bases.create("kb")  # the name is free again, with nothing left over
    assert catalog.files.list("kb") == []


def test_concurrent_submissions_of_one_name_leave_one_file(catalog: Catalog, lifecycle: JobLifecycle) -> None:
    catalog.knowledge_bases.create("kb")
    errors: list[BaseException] = []

    def submit(i: int) -> None:
        try:
            _submit(lifecycle, content_hash=f"h{i}")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (file,) = catalog.files.list("kb")
    counts = catalog.jobs.counts()
    # Exactly one job owns the file; the other five were superseded.
    assert (counts[JobState.QUEUED], counts[JobState.CANCELLED]) == (1, 5)
    assert catalog.jobs.get(file.job_id).state is JobState.QUEUED


def test_sqlite_catalog_uses_wal_for_concurrent_processes(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.create_schema()
    with catalog.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    catalog.dispose()
