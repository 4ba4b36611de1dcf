"""The pipeline's guarantees, driven directly (no broker) against real embed and retrieve services.

What is checked here is what a queue makes hard to time: redelivered and superseded tasks do
nothing, point ids are deterministic, a file deleted mid-run leaves no vectors behind, and a
transient failure re-queues the job until its attempts run out.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.errors import FailedPrecondition
from services.common.sparse import SparseEncoder
from services.ingest.config import IngestSettings
from services.ingest.documents.parsers import parse
from services.ingest.documents.splitter import split_segments
from services.ingest.store.access import FileAccessList
from services.ingest.store.blobs import BlobStore
from services.ingest.store.records import JobState
from services.ingest.tests.conftest import Dependencies, ingest_settings, unused_address
from services.ingest.worker.pipeline import EMBED_START, IngestPipeline, Retry, point_id
from zhiku.v1 import retrieve_pb2, retrieve_pb2_grpc

TEXT = "\n\n".join(
    f"第{i}段：知识库把文档切成小块。每块编码后写入向量库，提问时检索出来。" for i in range(10)
)


@pytest.fixture
def settings(tmp_path: Path, dependencies: Dependencies) -> IngestSettings:
    return ingest_settings(
        tmp_path, embed_addr=dependencies.embed_address, retrieve_addr=dependencies.retrieve_address
    )


@pytest.fixture
def pipeline(settings: IngestSettings) -> Iterator[IngestPipeline]:
    built = IngestPipeline.from_settings(settings)
    yield built
    built.close()


@pytest.fixture
def retrieve(dependencies: Dependencies) -> Iterator[retrieve_pb2_grpc.RetrieveServiceStub]:
    with grpc.insecure_channel(dependencies.retrieve_address) as channel:
        yield retrieve_pb2_grpc.RetrieveServiceStub(channel)


def _kb(pipeline: IngestPipeline, request: pytest.FixtureRequest) -> str:
    name = f"pipe_{abs(hash(request.node.name)) % 10**8}"
    pipeline.catalog.knowledge_bases.create(name)
    return name


def _submit(pipeline: IngestPipeline, kb: str, name: str, content: bytes) -> str:
    BlobStore(pipeline.blobs.root).write(kb, name, content)
    digest = hashlib.sha256(content).hexdigest()
    return pipeline.lifecycle.submit_file(kb, name, len(content), digest, 120, 20).id


def _points(retrieve: retrieve_pb2_grpc.RetrieveServiceStub, kb: str) -> int:
    stats = retrieve.Stats(retrieve_pb2.StatsRequest(collection=kb), timeout=30)
    return stats.points if stats.exists else -1


def test_a_redelivered_task_of_a_finished_job_does_nothing(
    pipeline: IngestPipeline, retrieve: retrieve_pb2_grpc.RetrieveServiceStub, request: pytest.FixtureRequest
) -> None:
    kb = _kb(pipeline, request)
    job_id = _submit(pipeline, kb, "a.txt", TEXT.encode())
    assert pipeline.run(job_id) is JobState.SUCCEEDED
    done = pipeline.catalog.jobs.get(job_id)
    assert _points(retrieve, kb) == done.chunks > 1
    assert pipeline.run(job_id) is None
    assert pipeline.catalog.jobs.get(job_id) == done
    assert pipeline.run("00000000-0000-4000-8000-000000000000") is None  # unknown id: nothing to do


def test_point_ids_are_deterministic_per_file_and_content(
    pipeline: IngestPipeline, retrieve: retrieve_pb2_grpc.RetrieveServiceStub, request: pytest.FixtureRequest
) -> None:
    kb = _kb(pipeline, request)
    content = TEXT.encode()
    job_id = _submit(pipeline, kb, "a.txt", content)
    pipeline.run(job_id)
    digest = hashlib.sha256(content).hexdigest()
    search = retrieve_pb2.SearchRequest(collection=kb, vector=[0.0] * 511 + [1.0], top_k=100)
    hits = retrieve.Search(search, timeout=30).hits
    assert {hit.chunk_id for hit in hits} == {
        point_id(kb, "a.txt", digest, index, job_id)
        for index in range(pipeline.catalog.jobs.get(job_id).chunks)
    }
    # The same bytes under another name are another file: their points must not collide.
    assert point_id(kb, "a.txt", digest, 0) != point_id(kb, "b.txt", digest, 0)
    # Ingesting the same upload again rewrites the same points instead of adding new ones.
    again = _submit(pipeline, kb, "a.txt", content)
    pipeline.run(again)
    assert _points(retrieve, kb) == pipeline.catalog.jobs.get(job_id).chunks


def test_a_superseded_job_is_skipped(pipeline: IngestPipeline, request: pytest.FixtureRequest) -> None:
    kb = _kb(pipeline, request)
    old = _submit(pipeline, kb, "a.txt", b"old version.")
    new = _submit(pipeline, kb, "a.txt", TEXT.encode())
    assert pipeline.run(old) is None
    assert pipeline.run(new) is JobState.SUCCEEDED
    assert pipeline.catalog.files.get(kb, "a.txt").job_id == new


def test_a_file_changed_behind_the_jobs_back_fails_clearly(
    pipeline: IngestPipeline, request: pytest.FixtureRequest
) -> None:
    kb = _kb(pipeline, request)
    job_id = _submit(pipeline, kb, "a.txt", TEXT.encode())
    pipeline.blobs.write(kb, "a.txt", b"tampered")
    assert pipeline.run(job_id) is JobState.FAILED
    assert pipeline.catalog.jobs.get(job_id).error == "a.txt: the stored original changed since this upload"


class _DeleteFileOnFirstUpsert:
    """The real retrieve stub, plus the API deleting the file while the worker upserts."""

    def __init__(self, stub: retrieve_pb2_grpc.RetrieveServiceStub, on_upsert: Callable[[], None]) -> None:
        self._stub = stub
        self._on_upsert = on_upsert

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def Upsert(self, request: Any, **kwargs: Any) -> Any:
        reply = self._stub.Upsert(request, **kwargs)
        if self._on_upsert is not None:
            self._on_upsert()
            self._on_upsert = None  # type: ignore[assignment]
        return reply


def test_a_file_deleted_mid_run_leaves_no_vectors(
    settings: IngestSettings,
    retrieve: retrieve_pb2_grpc.RetrieveServiceStub,
    request: pytest.FixtureRequest,
) -> None:
    pipeline = IngestPipeline.from_settings(settings.model_copy(update={"upsert_batch_size": 2}))
    try:
        kb = _kb(pipeline, request)
        keep = _submit(pipeline, kb, "keep.txt", TEXT.encode())
        assert pipeline.run(keep) is JobState.SUCCEEDED
        kept = pipeline.catalog.jobs.get(keep).chunks
        doomed = _submit(pipeline, kb, "doomed.txt", TEXT.encode())
        pipeline.retrieve = _DeleteFileOnFirstUpsert(  # type: ignore[assignment]
            pipeline.retrieve, lambda: pipeline.lifecycle.delete_file(kb, "doomed.txt")
        )
        assert pipeline.run(doomed) is JobState.CANCELLED
        assert pipeline.catalog.jobs.get(doomed).state is JobState.CANCELLED
        assert _points(retrieve, kb) == kept
    finally:
        pipeline.close()


def _readable(retrieve: retrieve_pb2_grpc.RetrieveServiceStub, kb: str, reader: list[str]) -> int:
    """How many of the collection's chunks a reader with these tokens finds."""
    request = retrieve_pb2.SearchRequest(
        collection=kb,
        query_text="知识库",
        mode=retrieve_pb2.SEARCH_MODE_SPARSE,
        top_k=100,
        reader_acl=reader,
        enforce_acl=True,
    )
    return len(retrieve.Search(request, timeout=30).hits)


def test_an_access_change_while_the_job_indexes_ends_with_the_new_list(
    settings: IngestSettings,
    retrieve: retrieve_pb2_grpc.RetrieveServiceStub,
    request: pytest.FixtureRequest,
) -> None:
    pipeline = IngestPipeline.from_settings(settings.model_copy(update={"upsert_batch_size": 2}))
    try:
        kb = _kb(pipeline, request)
        job_id = _submit(pipeline, kb, "a.txt", TEXT.encode())

        def set_acl(collections: list[str], acl: list[str]) -> None:
            assert collections == [kb]
            retrieve.SetFileAcl(retrieve_pb2.SetFileAclRequest(collection=kb, file_name="a.txt", acl=acl))

        # The list changes after the first batch is indexed with the old one (open): the
        # change rewrites the points indexed so far, the later batches are written with the
        # list the job read, and the job's end re-applies the catalog's list.
        restricted = FileAccessList.of(groups=["finance"])

        def change_access() -> None:
            pipeline.lifecycle.set_access(kb, "a.txt", restricted, set_acl)

        pipeline.retrieve = _DeleteFileOnFirstUpsert(pipeline.retrieve, change_access)  # type: ignore[assignment]
        assert pipeline.run(job_id) is JobState.SUCCEEDED
        chunks = pipeline.catalog.jobs.get(job_id).chunks
        assert chunks > 2
        assert _readable(retrieve, kb, ["group:finance"]) == chunks
        assert _readable(retrieve, kb, ["user:u_bob"]) == 0
        assert pipeline.catalog.files.get(kb, "a.txt").access == restricted
    finally:
        pipeline.close()


def test_an_unavailable_dependency_makes_the_job_wait_until_the_give_up_window_closes(
    tmp_path: Path, dependencies: Dependencies, request: pytest.FixtureRequest
) -> None:
    settings = ingest_settings(
        tmp_path,
        embed_addr=unused_address(),
        retrieve_addr=dependencies.retrieve_address,
        max_attempts=1,  # waits are not crashes: they must not use these up
        retry_backoff_s=0.2,
        retry_backoff_factor=3,
        retry_give_up_s=600,
    )
    pipeline = IngestPipeline.from_settings(settings)
    try:
        kb = _kb(pipeline, request)
        job_id = _submit(pipeline, kb, "a.txt", TEXT.encode())
        with pytest.raises(Retry) as retry:
            pipeline.run(job_id)
        assert retry.value.attempt == 1
        assert retry.value.delay_s == pytest.approx(0.2)
        queued = pipeline.catalog.jobs.get(job_id)
        assert queued.state is JobState.QUEUED and queued.waiting_for == "embed"
        assert queued.to_pb().error.startswith(
            "waiting for embed (attempt 1, next try in 1 s): embed service:"
        )
        with pytest.raises(Retry) as retry:  # embed still down: the next wait is 3 times longer
            pipeline.run(job_id)
        assert retry.value.attempt == 2
        assert retry.value.delay_s == pytest.approx(0.6)
    finally:
        pipeline.close()
    # A worker whose give-up window (0.5 s) has passed since the first wait fails the job.
    impatient = IngestPipeline.from_settings(settings.model_copy(update={"retry_give_up_s": 0.5}))
    try:
        time.sleep(max(0.0, queued.waiting_since + 0.5 - time.time()))
        assert impatient.run(job_id) is JobState.FAILED
        failed = impatient.catalog.jobs.get(job_id)
        assert (
            failed.error.startswith("embed service:") and "(gave up waiting for embed after " in failed.error
        )
        assert failed.error.endswith(" s, 3 attempts)") and failed.to_pb().error == failed.error
        assert impatient.catalog.files.get(kb, "a.txt").state is JobState.FAILED
    finally:
        impatient.close()


def test_a_file_over_the_chunk_limit_fails_at_once_before_any_embedding(
    tmp_path: Path,
    dependencies: Dependencies,
    retrieve: retrieve_pb2_grpc.RetrieveServiceStub,
    request: pytest.FixtureRequest,
) -> None:
    settings = ingest_settings(
        tmp_path,
        embed_addr=dependencies.embed_address,
        retrieve_addr=dependencies.retrieve_address,
        max_chunks_per_file=3,
    )
    pipeline = IngestPipeline.from_settings(settings)
    try:
        kb = _kb(pipeline, request)
        chunks = len(split_segments(parse("big.txt", TEXT.encode()), "big.txt", 120, 20))
        assert chunks > 3
        embedded = REGISTRY.get_sample_value("zhiku_ingest_embed_batch_texts_count") or 0.0
        job_id = _submit(pipeline, kb, "big.txt", TEXT.encode())
        assert pipeline.run(job_id) is JobState.FAILED
        failed = pipeline.catalog.jobs.get(job_id)
        assert failed.error == (
            f"big.txt yields {chunks} chunks, over the limit of 3 per file; "
            "split it or raise ZHIKU_INGEST_MAX_CHUNKS_PER_FILE"
        )
        assert failed.attempts == 1 and pipeline.catalog.files.get(kb, "big.txt").error == failed.error
        assert (REGISTRY.get_sample_value("zhiku_ingest_embed_batch_texts_count") or 0.0) == embedded
        assert _points(retrieve, kb) == -1  # nothing indexed, not even a collection
        small = _submit(pipeline, kb, "small.txt", "一句话。两句话。".encode())
        assert pipeline.run(small) is JobState.SUCCEEDED  # files within the limit are unaffected
    finally:
        pipeline.close()


class _WatchUpserts:
    """The real retrieve stub; counts the collection's points before every Upsert and can
    fail (non-transiently) after a number of successful upserts."""

    def __init__(
        self, stub: retrieve_pb2_grpc.RetrieveServiceStub, kb: str, fail_after: int | None = None
    ) -> None:
        self._stub = stub
        self._kb = kb
        self._fail_after = fail_after
        self.seen: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def Upsert(self, request: Any, **kwargs: Any) -> Any:
        if self._fail_after is not None and len(self.seen) >= self._fail_after:
            raise FailedPrecondition("vector store rejected the batch")
        self.seen.append(_points(self._stub, self._kb))
        return self._stub.Upsert(request, **kwargs)


def test_replacing_a_file_keeps_its_old_points_until_the_new_ones_are_indexed(
    settings: IngestSettings, retrieve: retrieve_pb2_grpc.RetrieveServiceStub, request: pytest.FixtureRequest
) -> None:
    pipeline = IngestPipeline.from_settings(settings.model_copy(update={"upsert_batch_size": 3}))
    real = pipeline.retrieve
    try:
        kb = _kb(pipeline, request)
        first = _submit(pipeline, kb, "a.txt", TEXT.encode())
        assert pipeline.run(first) is JobState.SUCCEEDED
        old = pipeline.catalog.jobs.get(first).chunks
        # A reindex with smaller chunks: same content, a new generation of points.
        file = pipeline.catalog.files.get(kb, "a.txt")
        second = pipeline.lifecycle.submit_file(
            kb, "a.txt", file.size, file.content_hash, 40, 5, override=True
        ).id
        watch = _WatchUpserts(real, kb)
        pipeline.retrieve = watch  # type: ignore[assignment]
        assert pipeline.run(second) is JobState.SUCCEEDED
        new = pipeline.catalog.jobs.get(second).chunks
        assert new > old and len(watch.seen) > 2
        # Every upsert found the old points still there, plus the new ones written so far.
        assert watch.seen == [old + 3 * n for n in range(len(watch.seen))]
        assert _points(retrieve, kb) == new == pipeline.catalog.files.get(kb, "a.txt").chunks
        # A permanent failure mid-index drops the partial generation and keeps the previous one.
        third = pipeline.lifecycle.submit_file(
            kb, "a.txt", file.size, file.content_hash, 120, 20, override=True
        ).id
        pipeline.retrieve = _WatchUpserts(real, kb, fail_after=1)  # type: ignore[assignment]
        assert pipeline.run(third) is JobState.FAILED
        assert pipeline.catalog.jobs.get(third).error == "vector store rejected the batch"
        assert _points(retrieve, kb) == new
        failed = pipeline.catalog.files.get(kb, "a.txt")
        assert failed.chunks == new and failed.state is JobState.FAILED
    finally:
        pipeline.close()


def test_a_job_held_by_a_live_worker_is_not_run_twice(
    pipeline: IngestPipeline, request: pytest.FixtureRequest
) -> None:
    kb = _kb(pipeline, request)
    job_id = _submit(pipeline, kb, "a.txt", TEXT.encode())
    assert pipeline.lifecycle.begin_attempt(job_id, lease_s=60) is not None  # another worker has it
    assert pipeline.run(job_id) is None  # a duplicate delivery does nothing
    assert pipeline.catalog.jobs.get(job_id).attempts == 1


def test_split_settings_of_the_job_reach_the_splitter(
    pipeline: IngestPipeline, retrieve: retrieve_pb2_grpc.RetrieveServiceStub, request: pytest.FixtureRequest
) -> None:
    kb = _kb(pipeline, request)
    content = (
        "# 安装指南\n\n第一步：下载安装包并解压到本地目录。\n\n"
        "## 配置\n\n第二步：编辑配置文件，填写服务地址。\n"
    ).encode()
    BlobStore(pipeline.blobs.root).write(kb, "guide.md", content)
    digest = hashlib.sha256(content).hexdigest()
    job = pipeline.lifecycle.submit_file(
        kb, "guide.md", len(content), digest, 250, 50, splitter="markdown", title_enhance=True
    )
    assert (job.splitter, job.title_enhance) == ("markdown", True)
    assert pipeline.run(job.id) is JobState.SUCCEEDED
    search = retrieve_pb2.SearchRequest(collection=kb, vector=[0.0] * 511 + [1.0], top_k=10)
    hits = retrieve.Search(search, timeout=30).hits
    assert len(hits) == pipeline.catalog.jobs.get(job.id).chunks
    config = [hit for hit in hits if "编辑配置文件" in hit.text]
    assert config and config[0].metadata["heading"] == "安装指南 > 配置"
    assert config[0].text.startswith("安装指南")  # title enhancement prefixed the parent title
    assert config[0].metadata["generation"] == job.id


def test_a_collection_dropped_behind_the_workers_back_is_created_again(
    pipeline: IngestPipeline, retrieve: retrieve_pb2_grpc.RetrieveServiceStub, request: pytest.FixtureRequest
) -> None:
    """The pipeline ensures a collection once per process; a drop since then is survived."""
    kb = _kb(pipeline, request)
    first = _submit(pipeline, kb, "a.txt", TEXT.encode())
    assert pipeline.run(first) is JobState.SUCCEEDED
    retrieve.DropCollection(retrieve_pb2.DropCollectionRequest(collection=kb), timeout=30)
    assert _points(retrieve, kb) == -1
    second = _submit(pipeline, kb, "b.txt", TEXT.encode())
    assert pipeline.run(second) is JobState.SUCCEEDED
    assert _points(retrieve, kb) == pipeline.catalog.jobs.get(second).chunks > 1


class _RecordRetrieve:
    """The real retrieve stub; records its EnsureCollection replies and Upsert requests, and
    can hand the worker another encoder spec than the service's (``spec``)."""

    def __init__(self, stub: retrieve_pb2_grpc.RetrieveServiceStub, spec: str | None = None) -> None:
        self._stub = stub
        self._spec = spec
        self.specs: list[str] = []
        self.points: list[retrieve_pb2.Point] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def EnsureCollection(self, request: Any, **kwargs: Any) -> Any:
        reply = self._stub.EnsureCollection(request, **kwargs)
        self.specs.append(reply.sparse_encoder)
        if self._spec is not None:
            reply.sparse_encoder = self._spec
        return reply

    def Upsert(self, request: Any, **kwargs: Any) -> Any:
        self.points.extend(request.points)
        return self._stub.Upsert(request, **kwargs)


def _encoded_by_retrieve() -> float:
    """Points the retrieve service (in this process) encoded itself, for any reason."""
    return sum(
        REGISTRY.get_sample_value("zhiku_retrieve_sparse_encoded_points_total", {"reason": reason}) or 0.0
        for reason in ("absent", "mismatch")
    )


def test_points_carry_the_sparse_vectors_of_the_encoder_retrieve_names(
    pipeline: IngestPipeline, retrieve: retrieve_pb2_grpc.RetrieveServiceStub, request: pytest.FixtureRequest
) -> None:
    """The worker, not the retrieve service, cuts and weighs the chunks (issue 20)."""
    kb = _kb(pipeline, request)
    recorder = _RecordRetrieve(pipeline.retrieve)
    pipeline.retrieve = recorder  # type: ignore[assignment]
    before = _encoded_by_retrieve()
    job_id = _submit(pipeline, kb, "a.txt", (TEXT + "\n\nThe founders founded cities.").encode())
    assert pipeline.run(job_id) is JobState.SUCCEEDED
    assert recorder.specs == [SparseEncoder().spec]  # the service's default settings; ensured once
    encoder = SparseEncoder.from_spec(recorder.specs[0])
    assert len(recorder.points) == pipeline.catalog.jobs.get(job_id).chunks > 1
    for point in recorder.points:
        expected = encoder.document(point.text)
        assert point.sparse_encoder == encoder.spec
        assert list(point.sparse_indices) == expected.indices and expected.indices
        assert list(point.sparse_values) == pytest.approx(expected.values, rel=1e-6)  # sent as float32
    assert _encoded_by_retrieve() == before  # the service stored them as sent
    assert _readable(retrieve, kb, ["*"]) > 0  # and its sparse search finds them


def test_a_spec_the_worker_cannot_reproduce_leaves_the_encoding_to_retrieve(
    pipeline: IngestPipeline, retrieve: retrieve_pb2_grpc.RetrieveServiceStub, request: pytest.FixtureRequest
) -> None:
    """A newer retrieve release's spec: points go without vectors, retrieve encodes them."""
    kb = _kb(pipeline, request)
    recorder = _RecordRetrieve(pipeline.retrieve, spec="bm25/v99 tokenizer=future-1.0")
    pipeline.retrieve = recorder  # type: ignore[assignment]
    before = _encoded_by_retrieve()
    job_id = _submit(pipeline, kb, "a.txt", TEXT.encode())
    assert pipeline.run(job_id) is JobState.SUCCEEDED
    chunks = pipeline.catalog.jobs.get(job_id).chunks
    assert len(recorder.points) == chunks > 1
    for point in recorder.points:
        assert (point.sparse_encoder, list(point.sparse_indices), list(point.sparse_values)) == ("", [], [])
    assert _encoded_by_retrieve() == before + chunks
    assert _readable(retrieve, kb, ["*"]) == chunks


class _GatedEmbed:
    """The real embed stub, whose Embed calls wait until the test opens the gate."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def Embed(self, request: Any, **kwargs: Any) -> Any:
        assert self.gate.wait(60), "the test never opened the gate"
        return self._stub.Embed(request, **kwargs)


def test_a_job_waiting_for_the_model_shows_that_it_is_embedding(
    settings: IngestSettings, request: pytest.FixtureRequest
) -> None:
    """Its "embedding" report was held back (written at most every progress_interval_s) just
    before it started waiting; the wait itself must not keep it from the catalog."""
    pipeline = IngestPipeline.from_settings(settings.model_copy(update={"progress_interval_s": 0.2}))
    gated = _GatedEmbed(pipeline.embed)
    pipeline.embed = gated  # type: ignore[assignment]
    try:
        kb = _kb(pipeline, request)
        job_id = _submit(pipeline, kb, "a.txt", TEXT.encode())
        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(pipeline.run, job_id)
            deadline = time.monotonic() + 30
            while (job := pipeline.catalog.jobs.get(job_id)).state is not JobState.EMBEDDING:
                assert time.monotonic() < deadline, f"the waiting job still reads {job.state}, {job.progress}"
                time.sleep(0.05)
            assert job.progress == pytest.approx(EMBED_START) and not outcome.done()
            gated.gate.set()
            assert outcome.result(60) is JobState.SUCCEEDED
    finally:
        gated.gate.set()
        pipeline.close()


def test_jobs_waiting_for_the_model_report_together_at_a_shared_tick(
    settings: IngestSettings, request: pytest.FixtureRequest
) -> None:
    """Four jobs claimed 0.08 s apart all wait on the model; their held-back "embedding"
    reports reach the catalog at the tick after the claims, in one or two writes (the first
    to arrive may go alone: the coalescer does not wait for company), not one write each."""
    interval = 1.0
    pipeline = IngestPipeline.from_settings(settings.model_copy(update={"progress_interval_s": interval}))
    gated = _GatedEmbed(pipeline.embed)
    pipeline.embed = gated  # type: ignore[assignment]
    reported: list[list[str]] = []
    claim_and_finish = pipeline.lifecycle.claim_and_finish

    def recording(job_ids: Any, lease_s: float, finishes: Any, reports: Any = ()) -> Any:
        if reports:
            reported.append([report.job_id for report in reports])
        return claim_and_finish(job_ids, lease_s, finishes, reports)

    pipeline.lifecycle.claim_and_finish = recording  # type: ignore[method-assign]
    try:
        kb = _kb(pipeline, request)
        jobs = [_submit(pipeline, kb, f"{n}.txt", f"{n} {TEXT}".encode()) for n in range(4)]
        while time.monotonic() % interval > 0.1:  # start just after a tick: every claim in one window
            time.sleep(0.01)
        with ThreadPoolExecutor(len(jobs)) as pool:
            outcomes = []
            for job_id in jobs:
                outcomes.append(pool.submit(pipeline.run, job_id))
                time.sleep(0.08)
            deadline = time.monotonic() + 30
            while sorted(job for ids in reported for job in ids) != sorted(jobs):
                assert time.monotonic() < deadline, f"not every job reported: {reported}"
                time.sleep(0.05)
            assert len(reported) <= 2, f"the reports went apart: {reported}"
            assert all(pipeline.catalog.jobs.get(job).state is JobState.EMBEDDING for job in jobs)
            gated.gate.set()
            assert [outcome.result(60) for outcome in outcomes] == [JobState.SUCCEEDED] * len(jobs)
    finally:
        gated.gate.set()
        pipeline.close()
