"""The whole ingest path with a REAL Celery worker process, on both brokers.

``celery -A services.ingest.worker.celery_app worker`` runs as a subprocess configured only by
environment variables (as the launcher runs it); the ingest API, the embed service (bundled
USE model) and the retrieve service (embedded Qdrant engine) run in this process on free
ports. Broker "sqla" is the embedded default (Celery's SQLAlchemy transport on the SQLite
catalog); broker "redis" is the deployed shape (Redis on a dedicated db and queue, the catalog
on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis

from services.ingest.api.server import build_spec
from services.ingest.config import IngestSettings
from services.ingest.store.catalog import Catalog
from services.ingest.store.tables import CatalogBase
from services.ingest.tests.conftest import (
    DOCS,
    REPO,
    Dependencies,
    background_service,
    free_port,
    ingest_settings,
    unused_address,
)
from zhiku.v1 import embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

REDIS_URL = "redis://127.0.0.1:6379/13"  # a db of its own; the queue name is unique per run
TIMEOUT = 60
JOB_TIMEOUT_S = 240
TERMINAL = {ingest_pb2.JOB_STATE_SUCCEEDED, ingest_pb2.JOB_STATE_FAILED, ingest_pb2.JOB_STATE_CANCELLED}

CHINESE = "\n\n".join(
    f"第{i}节：知识库问答平台先把上传的文档解析成文本，再按句号切分成小块。"
    f"每一块都由向量模型编码后写入向量库；提问时系统检索最相关的段落并生成答案。"
    f"本节的编号是{i}，用于检验切分后的每一块都能被找回。"
    for i in range(12)
)


@dataclass
class Stack:
    ingest: ingest_pb2_grpc.IngestServiceStub
    retrieve: retrieve_pb2_grpc.RetrieveServiceStub
    embed: embed_pb2_grpc.EmbedServiceStub
    settings: IngestSettings
    embed_model: str
    worker_metrics_port: int
    worker_log: Path

    def log_tail(self) -> str:
        return self.worker_log.read_text(errors="replace")[-4000:]


def _worker_env(settings: IngestSettings, metrics_port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZHIKU_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "ZHIKU_DATA_DIR": str(settings.common.data_dir),
            "ZHIKU_LOG_JSON": "false",
            "ZHIKU_EMBED_ADDR": settings.common.embed_addr,
            "ZHIKU_RETRIEVE_ADDR": settings.common.retrieve_addr,
            "ZHIKU_CATALOG_URL": settings.catalog_url,
            "ZHIKU_REDIS_URL": settings.redis_url,
            "ZHIKU_INGEST_BLOB_DIR": str(settings.blob_dir),
            "ZHIKU_INGEST_QUEUE": settings.queue,
            "ZHIKU_INGEST_WORKER_METRICS_PORT": str(metrics_port),
            "ZHIKU_INGEST_MAX_ATTEMPTS": str(settings.max_attempts),
            "ZHIKU_INGEST_RETRY_BACKOFF_S": str(settings.retry_backoff_s),
            "ZHIKU_INGEST_RETRY_BACKOFF_FACTOR": str(settings.retry_backoff_factor),
            "ZHIKU_INGEST_RETRY_BACKOFF_MAX_S": str(settings.retry_backoff_max_s),
            "ZHIKU_INGEST_RETRY_GIVE_UP_S": str(settings.retry_give_up_s),
            "ZHIKU_INGEST_MAX_CHUNKS_PER_FILE": str(settings.max_chunks_per_file),
            "ZHIKU_INGEST_PROGRESS_INTERVAL_S": str(settings.progress_interval_s),
            "ZHIKU_INGEST_LEASE_S": str(settings.lease_s),
            "ZHIKU_INGEST_EMBED_BATCH_SIZE": str(settings.embed_batch_size),
            "ZHIKU_INGEST_UPSERT_BATCH_SIZE": str(settings.upsert_batch_size),
            "ZHIKU_INGEST_SOURCES_ROOT": str(settings.sources_root or ""),
            "ZHIKU_INGEST_SOURCES_KEY": settings.sources_key,
            "ZHIKU_INGEST_SOURCES_ALLOW_PRIVATE_NETWORKS": str(
                settings.sources_allow_private_networks
            ).lower(),
        }
    )
    if settings.sources_root is None:
        del env["ZHIKU_INGEST_SOURCES_ROOT"]
    return env


@contextlib.contextmanager
def celery_worker(
    settings: IngestSettings, metrics_port: int, log_path: Path, concurrency: int = 2
) -> Iterator[subprocess.Popen]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "services.ingest.worker.celery_app",
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"ingest-test-{uuid.uuid4().hex[:8]}@%h",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=_worker_env(settings, metrics_port),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"worker exited with {process.returncode}:\n{log_path.read_text(errors='replace')}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"worker not up after 120 s:\n{log_path.read_text(errors='replace')}")
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # warm shutdown, as the launcher does
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _drop_tables(url: str) -> None:
    catalog = Catalog(url)
    CatalogBase.metadata.drop_all(catalog.engine)
    catalog.dispose()


@pytest.fixture(scope="module", params=["sqla", "redis"])
def stack(
    request: pytest.FixtureRequest, dependencies: Dependencies, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp(f"ingest-{request.param}")
    overrides: dict[str, object] = {}
    if request.param == "redis":
        overrides = {"redis_url": REDIS_URL, "catalog_url": request.getfixturevalue("postgres_url")}
        _drop_tables(str(overrides["catalog_url"]))
    settings = ingest_settings(
        data_dir,
        embed_addr=dependencies.embed_address,
        retrieve_addr=dependencies.retrieve_address,
        **overrides,
    )
    metrics_port = free_port()
    log_path = data_dir / "worker.log"
    try:
        with (
            background_service(build_spec(settings), settings) as api,
            celery_worker(settings, metrics_port, log_path),
            grpc.insecure_channel(api.address) as ingest_channel,
            grpc.insecure_channel(dependencies.retrieve_address) as retrieve_channel,
            grpc.insecure_channel(dependencies.embed_address) as embed_channel,
        ):
            yield Stack(
                ingest_pb2_grpc.IngestServiceStub(ingest_channel),
                retrieve_pb2_grpc.RetrieveServiceStub(retrieve_channel),
                embed_pb2_grpc.EmbedServiceStub(embed_channel),
                settings,
                dependencies.embed_model,
                metrics_port,
                log_path,
            )
    finally:
        # Shown by pytest next to any failure of this module: what the worker process said.
        if log_path.exists():
            print(f"--- worker log ({request.param}) ---\n{log_path.read_text(errors='replace')[-6000:]}")
        if request.param == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"*{settings.queue}*"):  # the queue and kombu's bindings
                client.delete(key)
            client.close()


# -- helpers ------------------------------------------------------------------------------


def _kb(stack: Stack) -> str:
    name = f"库_{uuid.uuid4().hex[:8]}"
    created = stack.ingest.CreateKnowledgeBase(
        ingest_pb2.CreateKnowledgeBaseRequest(name=name), timeout=TIMEOUT
    )
    assert created.embed_model == stack.embed_model  # embed is up: the model is recorded at once
    return name


def _submit(stack: Stack, kb: str, name: str, content: bytes, **extra: Any) -> str:
    request = ingest_pb2.SubmitFileRequest(knowledge_base=kb, file_name=name, content=content, **extra)
    job = stack.ingest.SubmitFile(request, timeout=TIMEOUT)
    assert job.state == ingest_pb2.JOB_STATE_QUEUED
    return job.id


def _wait(stack: Stack, *job_ids: str) -> dict[str, ingest_pb2.Job]:
    final: dict[str, ingest_pb2.Job] = {}
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while len(final) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            job = stack.ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=TIMEOUT)
            if job.state in TERMINAL:
                final[job_id] = job
        time.sleep(0.2)
    missing = [job_id for job_id in job_ids if job_id not in final]
    assert not missing, f"jobs not finished after {JOB_TIMEOUT_S}s: {missing}\n{stack.log_tail()}"
    return final


def _succeeded(stack: Stack, *job_ids: str) -> dict[str, ingest_pb2.Job]:
    final = _wait(stack, *job_ids)
    for job in final.values():
        assert job.state == ingest_pb2.JOB_STATE_SUCCEEDED, f"{job}\n{stack.log_tail()}"
        assert job.chunks > 0 and job.progress == pytest.approx(1.0) and job.error == ""
    return final


def _points(stack: Stack, kb: str) -> int:
    stats = stack.retrieve.Stats(retrieve_pb2.StatsRequest(collection=kb), timeout=TIMEOUT)
    return stats.points if stats.exists else -1


def _files(stack: Stack, kb: str) -> dict[str, ingest_pb2.FileInfo]:
    listed = stack.ingest.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=TIMEOUT)
    return {info.name: info for info in listed.files}


def _get_kb(stack: Stack, kb: str) -> ingest_pb2.KnowledgeBase:
    return stack.ingest.GetKnowledgeBase(ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=TIMEOUT)


def _search(stack: Stack, kb: str, query: str) -> list:
    vector = stack.embed.Embed(
        embed_pb2.EmbedRequest(texts=[query], kind=embed_pb2.EMBED_KIND_QUERY), timeout=TIMEOUT
    ).vectors[0]
    request = retrieve_pb2.SearchRequest(collection=kb, vector=vector.values, top_k=5)
    return list(stack.retrieve.Search(request, timeout=TIMEOUT).hits)


# -- tests --------------------------------------------------------------------------------


def test_chinese_text_and_docx_are_ingested_and_counted(stack: Stack) -> None:
    kb = _kb(stack)
    txt_job = _submit(stack, kb, "平台说明.txt", CHINESE.encode("gbk"))
    docx_job = _submit(stack, kb, "test.docx", (DOCS / "test.docx").read_bytes())
    jobs = _succeeded(stack, txt_job, docx_job)
    files = _files(stack, kb)
    assert set(files) == {"平台说明.txt", "test.docx"}
    for job in jobs.values():
        info = files[job.file_name]
        assert info.state == ingest_pb2.JOB_STATE_SUCCEEDED and info.error == ""
        assert info.chunks == job.chunks
    total = sum(job.chunks for job in jobs.values())
    assert _points(stack, kb) == total
    summary = _get_kb(stack, kb)
    assert (summary.file_count, summary.chunk_count) == (2, total)
    # The vectors are the chunks' own: a question finds the Chinese file, decoded from GBK.
    hits = _search(stack, kb, "本节的编号是7")
    assert hits and hits[0].file_name == "平台说明.txt" and "编号是7" in hits[0].text
    assert hits[0].metadata["file"] == "平台说明.txt"
    docx_hits = _search(stack, kb, "AutoGen is an open-source framework for multi-agent conversation")
    assert any(hit.file_name == "test.docx" for hit in docx_hits)


def test_chunking_options_change_the_chunk_count(stack: Stack) -> None:
    kb = _kb(stack)
    small = _submit(stack, kb, "small.txt", CHINESE.encode(), chunk_size=60, chunk_overlap=10)
    large = _submit(stack, kb, "large.txt", CHINESE.encode(), chunk_size=2000)
    jobs = _succeeded(stack, small, large)
    assert jobs[small].chunks > jobs[large].chunks >= 1
    assert _points(stack, kb) == jobs[small].chunks + jobs[large].chunks


def test_garbage_fails_clearly_and_changes_nothing(stack: Stack) -> None:
    kb = _kb(stack)
    good = _succeeded(stack, _submit(stack, kb, "good.txt", CHINESE.encode()))
    before_points, before_kb = _points(stack, kb), _get_kb(stack, kb)
    bin_job = _submit(stack, kb, "random.bin", (DOCS / "random.bin").read_bytes())
    rng = random.Random(7)
    txt_job = _submit(stack, kb, "garbage.txt", bytes(rng.getrandbits(8) for _ in range(8192)))
    failed = _wait(stack, bin_job, txt_job)
    assert failed[bin_job].state == ingest_pb2.JOB_STATE_FAILED
    assert failed[bin_job].error.startswith("random.bin: unsupported file type '.bin'")
    assert failed[txt_job].state == ingest_pb2.JOB_STATE_FAILED
    assert failed[txt_job].error.startswith("garbage.txt: not a text file")
    files = _files(stack, kb)
    assert files["random.bin"].state == ingest_pb2.JOB_STATE_FAILED
    assert files["random.bin"].error == failed[bin_job].error and files["random.bin"].chunks == 0
    assert files["good.txt"].chunks == next(iter(good.values())).chunks
    assert _points(stack, kb) == before_points
    after_kb = _get_kb(stack, kb)
    assert after_kb.chunk_count == before_kb.chunk_count and after_kb.file_count == before_kb.file_count + 2


def test_legacy_formats_go_through_the_worker(stack: Stack) -> None:
    """A GBK-escaped RTF is ingested and found; a .doc that is no Word file fails with its reason."""
    kb = _kb(stack)
    escaped = (
        b"\\par " if c == 0x0A else b"\\'%02x" % c if c >= 0x80 else bytes([c]) for c in CHINESE.encode("gbk")
    )
    rtf = b"{\\rtf1\\ansi\\ansicpg936 " + b"".join(escaped) + b"}"
    good = _submit(stack, kb, "说明.rtf", rtf)
    bad = _submit(stack, kb, "memo.doc", b"just text with a .doc name")
    jobs = _wait(stack, good, bad)
    assert jobs[good].state == ingest_pb2.JOB_STATE_SUCCEEDED and jobs[good].chunks >= 1
    assert jobs[bad].state == ingest_pb2.JOB_STATE_FAILED
    assert jobs[bad].error.startswith("memo.doc: not a legacy Office .doc file (no OLE2 header)")
    hits = _search(stack, kb, "本节的编号是7")
    assert hits and hits[0].file_name == "说明.rtf" and "编号是7" in hits[0].text


def test_reupload_replaces_the_files_points(stack: Stack) -> None:
    kb = _kb(stack)
    first = _succeeded(stack, _submit(stack, kb, "doc.txt", CHINESE.encode()))
    assert _points(stack, kb) == next(iter(first.values())).chunks
    shorter = "只剩一句话了。".encode()
    second = _succeeded(stack, _submit(stack, kb, "doc.txt", shorter))
    assert next(iter(second.values())).chunks == 1
    assert _points(stack, kb) == 1
    assert _files(stack, kb)["doc.txt"].chunks == 1
    assert _search(stack, kb, "只剩一句话")[0].text == "只剩一句话了。"


def test_delete_file_removes_its_points(stack: Stack) -> None:
    kb = _kb(stack)
    jobs = _succeeded(
        stack,
        _submit(stack, kb, "keep.txt", CHINESE.encode()),
        _submit(stack, kb, "drop.docx", (DOCS / "test.docx").read_bytes()),
    )
    chunks = {job.file_name: job.chunks for job in jobs.values()}
    reply = stack.ingest.DeleteFile(
        ingest_pb2.DeleteFileRequest(knowledge_base=kb, file_name="drop.docx"), timeout=TIMEOUT
    )
    assert reply.deleted_chunks == chunks["drop.docx"]
    assert _points(stack, kb) == chunks["keep.txt"]
    assert set(_files(stack, kb)) == {"keep.txt"}
    assert _get_kb(stack, kb).chunk_count == chunks["keep.txt"]
    assert all(hit.file_name == "keep.txt" for hit in _search(stack, kb, "AutoGen multi-agent conversation"))


def test_delete_knowledge_base_removes_collection_blobs_and_rows(stack: Stack) -> None:
    kb = _kb(stack)
    (job_id,) = _succeeded(stack, _submit(stack, kb, "a.txt", CHINESE.encode()))
    assert stack.settings.blob_dir is not None and (stack.settings.blob_dir / kb / "a.txt").is_file()
    stack.ingest.DeleteKnowledgeBase(ingest_pb2.DeleteKnowledgeBaseRequest(name=kb), timeout=TIMEOUT)
    assert _points(stack, kb) == -1  # the collection is gone
    assert not (stack.settings.blob_dir / kb).exists()
    for call, request in [
        (stack.ingest.GetKnowledgeBase, ingest_pb2.GetKnowledgeBaseRequest(name=kb)),
        (stack.ingest.ListFiles, ingest_pb2.ListFilesRequest(knowledge_base=kb)),
        (stack.ingest.GetJob, ingest_pb2.GetJobRequest(id=job_id)),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_worker_exposes_prometheus_metrics(stack: Stack) -> None:
    kb = _kb(stack)
    _succeeded(stack, _submit(stack, kb, "m.txt", CHINESE.encode()))
    text = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics", timeout=10).text
    succeeded = [
        line
        for line in text.splitlines()
        if line.startswith('zhiku_ingest_jobs_finished_total{state="succeeded"}')
    ]
    assert succeeded and float(succeeded[0].split()[-1]) >= 1
    assert 'zhiku_ingest_stage_seconds_count{stage="embed"}' in text
    assert "zhiku_ingest_chunks_indexed_total" in text


def test_unreachable_embed_is_retried_then_fails_with_the_reason(
    dependencies: Dependencies, tmp_path: Path
) -> None:
    """An unavailable dependency sends the job back to the queue, waiting with a backoff (Celery
    retry), until the give-up window closes."""
    settings = ingest_settings(
        tmp_path,
        embed_addr=unused_address(),
        retrieve_addr=dependencies.retrieve_address,
        max_attempts=1,  # waits are not crashes: they do not use these up
        retry_backoff_s=1.0,  # long enough for the poll below to see the re-queued state
        retry_give_up_s=3.0,
    )
    with (
        background_service(build_spec(settings), settings) as api,
        celery_worker(settings, free_port(), tmp_path / "worker.log"),
        grpc.insecure_channel(api.address) as channel,
    ):
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        ingest.CreateKnowledgeBase(ingest_pb2.CreateKnowledgeBaseRequest(name="retry"), timeout=TIMEOUT)
        job = ingest.SubmitFile(
            ingest_pb2.SubmitFileRequest(knowledge_base="retry", file_name="a.txt", content=CHINESE.encode()),
            timeout=TIMEOUT,
        )
        deadline = time.monotonic() + JOB_TIMEOUT_S
        seen_retry = False
        current = ingest_pb2.Job()  # replaced on the first pass
        while time.monotonic() < deadline:
            current = ingest.GetJob(ingest_pb2.GetJobRequest(id=job.id), timeout=TIMEOUT)
            seen_retry = seen_retry or current.error.startswith("waiting for embed (attempt 1, next try in ")
            if current.state in TERMINAL:
                break
            time.sleep(0.05)
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert current.state == ingest_pb2.JOB_STATE_FAILED, f"{current}\n{log[-3000:]}"
        assert (
            current.error.startswith("embed service:")
            and "(gave up waiting for embed after " in current.error
        )
        assert current.attempts >= 2
        assert seen_retry  # between attempts the job was QUEUED again, saying what it waits for
        assert "Retry in" in log  # Celery really re-delivered the task after the backoff


def test_cancel_mid_run_keeps_the_previous_version(stack: Stack) -> None:
    kb = _kb(stack)
    (old_id,) = _succeeded(stack, _submit(stack, kb, "manual.txt", "旧版本只有一句话。".encode()))
    long_text = "\n\n".join(
        f"第{i}条：设备编号{i * 7919 % 10007}完成巡检，检查了{i % 13 + 2}个部件，结果写入知识库。"
        for i in range(2400)
    )
    job_id = _submit(stack, kb, "manual.txt", long_text.encode())
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = stack.ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=TIMEOUT)
        if job.state != ingest_pb2.JOB_STATE_QUEUED:  # a worker has it
            break
        assert job.state not in TERMINAL, f"finished before the cancel: {job}"
        time.sleep(0.02)
    cancelled = stack.ingest.CancelJob(ingest_pb2.CancelJobRequest(id=job_id), timeout=TIMEOUT)
    assert cancelled.state == ingest_pb2.JOB_STATE_CANCELLED and cancelled.error == "cancelled by request"
    # The worker notices at its next step and drops whatever it had upserted.
    deadline = time.monotonic() + 60
    notice = f"job {job_id} was cancelled while running"
    while notice not in stack.worker_log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _points(stack, kb) == 1, stack.log_tail()
    info = _files(stack, kb)["manual.txt"]
    assert info.state == ingest_pb2.JOB_STATE_CANCELLED and info.chunks == 1
    assert _search(stack, kb, "旧版本")[0].text == "旧版本只有一句话。"
    listed = stack.ingest.ListJobs(ingest_pb2.ListJobsRequest(knowledge_base=kb), timeout=TIMEOUT).jobs
    assert [job.id for job in listed] == [job_id, old_id]
