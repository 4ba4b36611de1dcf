"""The IngestService API over real gRPC: catalog, blobs, a real broker queue, a real retrieve service.

No worker runs here (test_worker.py has the whole pipeline): jobs stay QUEUED, and the queued
Celery message is read back from the broker to prove it was really published.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.config import CommonSettings
from services.ingest.api.server import build_spec
from services.ingest.broker import INGEST_FILE_TASK, INGEST_FILES_TASK, create_celery_app
from services.ingest.config import IngestSettings
from services.ingest.jobs import JobLifecycle
from services.ingest.store.catalog import Catalog
from services.ingest.tests.conftest import DOCS, background_service, ingest_settings, unused_address
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec as build_retrieve_spec
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

TIMEOUT = 30


@dataclass
class Api:
    stub: ingest_pb2_grpc.IngestServiceStub
    settings: IngestSettings
    retrieve: retrieve_pb2_grpc.RetrieveServiceStub


@pytest.fixture
def retrieve_address(tmp_path: Path) -> Iterator[str]:
    settings = RetrieveSettings(
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        shutdown_grace_s=0,
        backend="edge",
        common=CommonSettings(data_dir=tmp_path / "retrieve"),
    )
    with background_service(build_retrieve_spec(settings), settings) as service:
        yield service.address


@contextlib.contextmanager
def running_api(settings: IngestSettings) -> Iterator[Api]:
    with (
        background_service(build_spec(settings), settings) as service,
        grpc.insecure_channel(service.address) as channel,
        grpc.insecure_channel(settings.common.retrieve_addr) as retrieve_channel,
    ):
        yield Api(
            ingest_pb2_grpc.IngestServiceStub(channel),
            settings,
            retrieve_pb2_grpc.RetrieveServiceStub(retrieve_channel),
        )


@pytest.fixture
def api(tmp_path: Path, retrieve_address: str) -> Iterator[Api]:
    # embed is down on purpose: creating a knowledge base must not depend on it.
    settings = ingest_settings(
        tmp_path / "ingest", embed_addr=unused_address(), retrieve_addr=retrieve_address
    )
    with running_api(settings) as running:
        yield running


def _code(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    return caught.value.code(), caught.value.details() or ""


def _create(api: Api, name: str = "手册") -> ingest_pb2.KnowledgeBase:
    return api.stub.CreateKnowledgeBase(
        ingest_pb2.CreateKnowledgeBaseRequest(name=name, description="员工手册"), timeout=TIMEOUT
    )


def _submit(api: Api, name: str, content: bytes, kb: str = "手册", **extra: Any) -> ingest_pb2.Job:
    request = ingest_pb2.SubmitFileRequest(knowledge_base=kb, file_name=name, content=content, **extra)
    return api.stub.SubmitFile(request, timeout=TIMEOUT)


def _queued_messages(settings: IngestSettings) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting on the settings' queue, read from the broker."""
    app = create_celery_app(settings)
    found = []
    with app.connection_for_read() as connection, connection.SimpleQueue(settings.queue) as queue:
        while True:
            try:
                message = queue.get(timeout=0.5)
            except queue.Empty:
                break
            found.append((message.headers["task"], message.payload[0]))
            message.ack()
    app.close()
    return found


def test_knowledge_base_lifecycle(api: Api) -> None:
    created = _create(api)
    assert (created.name, created.description, created.file_count, created.chunk_count) == (
        "手册",
        "员工手册",
        0,
        0,
    )
    assert created.embed_model == ""  # embed is down: recorded by the first successful job
    assert created.created_at == pytest.approx(time.time(), abs=60)
    code, details = _code(api.stub.CreateKnowledgeBase, ingest_pb2.CreateKnowledgeBaseRequest(name="手册"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "手册" in details
    _create(api, "another")
    listed = api.stub.ListKnowledgeBases(ingest_pb2.ListKnowledgeBasesRequest(), timeout=TIMEOUT)
    assert sorted(kb.name for kb in listed.knowledge_bases) == ["another", "手册"]
    got = api.stub.GetKnowledgeBase(ingest_pb2.GetKnowledgeBaseRequest(name="手册"), timeout=TIMEOUT)
    assert got.description == "员工手册"
    api.stub.DeleteKnowledgeBase(ingest_pb2.DeleteKnowledgeBaseRequest(name="手册"), timeout=TIMEOUT)
    code, details = _code(api.stub.GetKnowledgeBase, ingest_pb2.GetKnowledgeBaseRequest(name="手册"))
    assert code == grpc.StatusCode.NOT_FOUND and details == "knowledge base '手册' does not exist"
    code, _ = _code(api.stub.DeleteKnowledgeBase, ingest_pb2.DeleteKnowledgeBaseRequest(name="手册"))
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("", "must not be empty"), ("../etc", "may only hold"), ("..", "'..'"), ("x" * 65, "limit is 64")],
)
def test_bad_knowledge_base_names_are_invalid_argument(api: Api, name: str, fragment: str) -> None:
    for call, request in [
        (api.stub.CreateKnowledgeBase, ingest_pb2.CreateKnowledgeBaseRequest(name=name)),
        (api.stub.GetKnowledgeBase, ingest_pb2.GetKnowledgeBaseRequest(name=name)),
        (api.stub.ListFiles, ingest_pb2.ListFilesRequest(knowledge_base=name)),
    ]:
        code, details = _code(call, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details


def test_submit_stores_the_file_records_a_job_and_enqueues_it(api: Api) -> None:
    _create(api)
    content = (DOCS / "test.pdf").read_bytes()
    job = _submit(api, "test.pdf", content)
    assert job.state == ingest_pb2.JOB_STATE_QUEUED
    assert (job.knowledge_base, job.file_name, job.progress, job.chunks) == ("手册", "test.pdf", 0.0, 0)
    assert api.stub.GetJob(ingest_pb2.GetJobRequest(id=job.id), timeout=TIMEOUT) == job
    assert _queued_messages(api.settings) == [(INGEST_FILE_TASK, [job.id])]
    (info,) = api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files
    assert (info.name, info.size, info.state, info.chunks) == (
        "test.pdf",
        len(content),
        ingest_pb2.JOB_STATE_QUEUED,
        0,
    )
    assert len(info.content_hash) == 64
    original = api.stub.GetFileContent(
        ingest_pb2.GetFileContentRequest(knowledge_base="手册", file_name="test.pdf"), timeout=TIMEOUT
    )
    assert (original.file_name, original.content_type, original.content) == (
        "test.pdf",
        "application/pdf",
        content,
    )
    kb = api.stub.GetKnowledgeBase(ingest_pb2.GetKnowledgeBaseRequest(name="手册"), timeout=TIMEOUT)
    assert kb.file_count == 1


def test_uploading_the_same_name_replaces_the_file(api: Api) -> None:
    _create(api)
    first = _submit(api, "说明.txt", "第一版。".encode())
    second = _submit(api, "说明.txt", "第二版。".encode())
    old = api.stub.GetJob(ingest_pb2.GetJobRequest(id=first.id), timeout=TIMEOUT)
    assert old.state == ingest_pb2.JOB_STATE_CANCELLED and second.id in old.error
    files = api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files
    assert [f.name for f in files] == ["说明.txt"]
    content = api.stub.GetFileContent(
        ingest_pb2.GetFileContentRequest(knowledge_base="手册", file_name="说明.txt"), timeout=TIMEOUT
    )
    assert content.content.decode() == "第二版。"
    assert content.content_type == "text/plain"


@pytest.mark.parametrize(
    ("kb", "name", "content", "extra", "code", "fragment"),
    [
        ("手册", "../x.txt", b"x", {}, grpc.StatusCode.INVALID_ARGUMENT, "must not contain '/'"),
        ("手册", "", b"x", {}, grpc.StatusCode.INVALID_ARGUMENT, "file name must not be empty"),
        ("手册", "a\x00.txt", b"x", {}, grpc.StatusCode.INVALID_ARGUMENT, "NUL"),
        ("手册", "empty.txt", b"", {}, grpc.StatusCode.INVALID_ARGUMENT, "empty.txt is empty"),
        ("手册", "a.txt", b"x", {"chunk_size": 5}, grpc.StatusCode.INVALID_ARGUMENT, "chunk_size must be"),
        (
            "手册",
            "a.txt",
            b"x",
            {"chunk_size": 100, "chunk_overlap": 100},
            grpc.StatusCode.INVALID_ARGUMENT,
            "overlap",
        ),
        ("手册", "a.txt", b"x", {"chunk_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "negative"),
        ("没有", "a.txt", b"x", {}, grpc.StatusCode.NOT_FOUND, "knowledge base '没有' does not exist"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(
    api: Api, kb: str, name: str, content: bytes, extra: dict, code: grpc.StatusCode, fragment: str
) -> None:
    _create(api)
    request = ingest_pb2.SubmitFileRequest(knowledge_base=kb, file_name=name, content=content, **extra)
    got, details = _code(api.stub.SubmitFile, request)
    assert got == code and fragment in details
    assert api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files == []
    blobs = api.settings.blob_dir
    assert blobs is not None and not any(p.is_file() for p in blobs.rglob("*"))
    assert _queued_messages(api.settings) == []


def test_oversized_upload_is_resource_exhausted(tmp_path: Path, retrieve_address: str) -> None:
    settings = ingest_settings(tmp_path, retrieve_addr=retrieve_address, max_file_mb=0.01)
    with running_api(settings) as api:
        _create(api)
        code, details = _code(
            api.stub.SubmitFile,
            ingest_pb2.SubmitFileRequest(knowledge_base="手册", file_name="big.txt", content=b"x" * 20_000),
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == "big.txt is 0.0 MB; the upload limit is 0.01 MB"


def test_get_job_checks_the_id(api: Api) -> None:
    code, details = _code(api.stub.GetJob, ingest_pb2.GetJobRequest(id="not-a-uuid"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a UUID" in details
    missing = "3f1d7a9e-0000-4000-8000-000000000000"
    code, details = _code(api.stub.GetJob, ingest_pb2.GetJobRequest(id=missing))
    assert code == grpc.StatusCode.NOT_FOUND and missing in details


def test_delete_file_removes_blob_row_and_cancels_its_job(api: Api) -> None:
    _create(api)
    job = _submit(api, "a.txt", "内容。".encode())
    request = ingest_pb2.DeleteFileRequest(knowledge_base="手册", file_name="a.txt")
    assert api.stub.DeleteFile(request, timeout=TIMEOUT).deleted_chunks == 0  # never indexed
    assert api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files == []
    code, _ = _code(
        api.stub.GetFileContent, ingest_pb2.GetFileContentRequest(knowledge_base="手册", file_name="a.txt")
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert api.stub.GetJob(ingest_pb2.GetJobRequest(id=job.id), timeout=TIMEOUT).state == (
        ingest_pb2.JOB_STATE_CANCELLED
    )
    code, details = _code(api.stub.DeleteFile, request)
    assert (
        code == grpc.StatusCode.NOT_FOUND
        and details == "file 'a.txt' does not exist in knowledge base '手册'"
    )


def test_delete_knowledge_base_drops_collection_blobs_and_rows(api: Api) -> None:
    _create(api)
    job = _submit(api, "a.txt", "内容。".encode())
    # A collection as the worker would leave it, so the drop is observable.
    api.retrieve.EnsureCollection(
        retrieve_pb2.EnsureCollectionRequest(collection="手册", dimension=4), timeout=TIMEOUT
    )
    api.stub.DeleteKnowledgeBase(ingest_pb2.DeleteKnowledgeBaseRequest(name="手册"), timeout=TIMEOUT)
    stats = api.retrieve.Stats(retrieve_pb2.StatsRequest(collection="手册"), timeout=TIMEOUT)
    assert not stats.exists
    assert api.settings.blob_dir is not None and not (api.settings.blob_dir / "手册").exists()
    code, _ = _code(api.stub.GetJob, ingest_pb2.GetJobRequest(id=job.id))
    assert code == grpc.StatusCode.NOT_FOUND
    _create(api)  # the name can be used again, empty
    assert api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files == []


def test_retrieve_down_makes_deletes_unavailable_and_keeps_everything(tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path, retrieve_addr=unused_address(), retrieve_timeout_s=5)
    with running_api(settings) as api:
        _create(api)
        _submit(api, "a.txt", "内容。".encode())
        code, details = _code(
            api.stub.DeleteFile, ingest_pb2.DeleteFileRequest(knowledge_base="手册", file_name="a.txt")
        )
        assert code == grpc.StatusCode.UNAVAILABLE and "retrieve service" in details
        code, _ = _code(api.stub.DeleteKnowledgeBase, ingest_pb2.DeleteKnowledgeBaseRequest(name="手册"))
        assert code == grpc.StatusCode.UNAVAILABLE
        files = api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files
        assert [f.name for f in files] == ["a.txt"]


def test_broker_down_fails_the_job_and_says_unavailable(tmp_path: Path, retrieve_address: str) -> None:
    settings = ingest_settings(
        tmp_path, retrieve_addr=retrieve_address, redis_url=f"redis://{unused_address()}/0"
    )
    with running_api(settings) as api:
        _create(api)
        code, details = _code(
            api.stub.SubmitFile,
            ingest_pb2.SubmitFileRequest(knowledge_base="手册", file_name="a.txt", content=b"text"),
        )
        assert code == grpc.StatusCode.UNAVAILABLE and "job queue unavailable" in details
        (info,) = api.stub.ListFiles(
            ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT
        ).files
        assert info.state == ingest_pb2.JOB_STATE_FAILED and "could not enqueue" in info.error


def test_queue_depth_gauge_follows_the_catalog(tmp_path: Path, retrieve_address: str) -> None:
    settings = ingest_settings(tmp_path, retrieve_addr=retrieve_address, metrics_refresh_s=0.05)
    with running_api(settings) as api:
        _create(api)
        for i in range(3):
            _submit(api, f"{i}.txt", b"text")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and REGISTRY.get_sample_value("zhiku_ingest_queue_depth") != 3:
            time.sleep(0.05)
        assert REGISTRY.get_sample_value("zhiku_ingest_queue_depth") == 3
        assert REGISTRY.get_sample_value("zhiku_ingest_jobs", {"state": "queued"}) == 3


def test_the_sweeper_removes_what_a_dead_worker_indexed_for_an_ended_job(
    tmp_path: Path, retrieve_address: str
) -> None:
    """A worker indexed a generation of a.txt, its job was cancelled, and the worker died
    before removing those points: the sweeper removes that generation and nothing else."""
    settings = ingest_settings(
        tmp_path / "ingest", embed_addr=unused_address(), retrieve_addr=retrieve_address, sweep_interval_s=0.2
    )
    with running_api(settings) as api:
        _create(api)
        job = _submit(api, "a.txt", "第一段。".encode())
        catalog = Catalog(settings.catalog_url)
        lifecycle = JobLifecycle(catalog)
        try:
            assert lifecycle.begin_attempt(job.id, lease_s=0.5) is not None  # the worker claims it
            api.retrieve.EnsureCollection(
                retrieve_pb2.EnsureCollectionRequest(collection="手册", dimension=4), timeout=TIMEOUT
            )
            points = [
                _point(n, file_name, generation)
                for n, (file_name, generation) in enumerate(
                    [("a.txt", job.id)] * 3 + [("a.txt", "older-job")] * 2 + [("b.txt", job.id)] * 2
                )
            ]
            api.retrieve.Upsert(retrieve_pb2.UpsertRequest(collection="手册", points=points), timeout=TIMEOUT)
            api.stub.CancelJob(ingest_pb2.CancelJobRequest(id=job.id), timeout=TIMEOUT)
            # ... and the worker is never heard of again.
            deadline = time.monotonic() + 15
            while _count(api) != 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _count(api) == 4  # a.txt's older generation and b.txt stay
            assert lifecycle.lapsed_cleanups() == []
        finally:
            catalog.dispose()


def _point(n: int, file_name: str, generation: str) -> retrieve_pb2.Point:
    return retrieve_pb2.Point(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"sweeper-test/{n}")),
        vector=[1.0, 0.5, 0.25, float(n + 1)],
        file_name=file_name,
        chunk_index=n,
        text=f"chunk {n}",
        metadata={"generation": generation},
    )


def _count(api: Api) -> int:
    return api.retrieve.Stats(retrieve_pb2.StatsRequest(collection="手册"), timeout=TIMEOUT).points


def _submit_many(api: Api, files: list[tuple[str, bytes]], kb: str = "手册") -> list[ingest_pb2.Job]:
    request = ingest_pb2.SubmitFilesRequest(
        files=[ingest_pb2.SubmitFileRequest(knowledge_base=kb, file_name=n, content=c) for n, c in files]
    )
    return list(api.stub.SubmitFiles(request, timeout=TIMEOUT).jobs)


def test_submit_files_records_every_file_and_queues_one_message(api: Api) -> None:
    _create(api)
    same = _submit(api, "same.txt", "不变。".encode())
    _queued_messages(api.settings)  # its own message, read away
    files = [("a.txt", "甲。".encode()), ("same.txt", "不变。".encode()), ("b.txt", "乙。".encode())]
    jobs = _submit_many(api, files)
    assert [job.file_name for job in jobs] == ["a.txt", "same.txt", "b.txt"]
    assert jobs[1].id == same.id and jobs[1].unchanged
    queued = [jobs[0].id, jobs[2].id]
    assert all(job.state == ingest_pb2.JOB_STATE_QUEUED for job in jobs)
    # The new jobs travel as one message; the unchanged file queues nothing.
    assert _queued_messages(api.settings) == [(INGEST_FILES_TASK, [queued])]
    listed = api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files
    assert sorted(info.name for info in listed) == ["a.txt", "b.txt", "same.txt"]
    content = api.stub.GetFileContent(
        ingest_pb2.GetFileContentRequest(knowledge_base="手册", file_name="b.txt"), timeout=TIMEOUT
    )
    assert content.content.decode() == "乙。"


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ([("a.txt", b"x"), ("empty.txt", b"")], "empty.txt is empty"),
        ([("a.txt", b"x"), ("../b.txt", b"y")], "must not contain '/'"),
        ([("a.txt", b"x"), ("a.txt", b"y")], "appears twice"),
    ],
)
def test_submit_files_refuses_a_bad_file_before_storing_any(
    api: Api, files: list[tuple[str, bytes]], fragment: str
) -> None:
    _create(api)
    request = ingest_pb2.SubmitFilesRequest(
        files=[ingest_pb2.SubmitFileRequest(knowledge_base="手册", file_name=n, content=c) for n, c in files]
    )
    got, details = _code(api.stub.SubmitFiles, request)
    assert got == grpc.StatusCode.INVALID_ARGUMENT and fragment in details
    assert api.stub.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base="手册"), timeout=TIMEOUT).files == []
    blobs = api.settings.blob_dir
    assert blobs is not None and not any(p.is_file() for p in blobs.rglob("*"))
    assert _queued_messages(api.settings) == []


def test_submit_files_takes_one_knowledge_base(api: Api) -> None:
    _create(api)
    _create(api, "其他")
    request = ingest_pb2.SubmitFilesRequest(
        files=[
            ingest_pb2.SubmitFileRequest(knowledge_base="手册", file_name="a.txt", content=b"x"),
            ingest_pb2.SubmitFileRequest(knowledge_base="其他", file_name="b.txt", content=b"y"),
        ]
    )
    got, details = _code(api.stub.SubmitFiles, request)
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "one knowledge base" in details
    got, details = _code(api.stub.SubmitFiles, ingest_pb2.SubmitFilesRequest())
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "at least one file" in details
