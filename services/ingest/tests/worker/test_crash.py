"""Crash safety for real: SIGKILL the Celery worker mid-job, on both brokers.

Neither broker returns a killed worker's task in time (the SQL transport deleted the message
when the worker fetched it; Redis waits out its visibility timeout), so the ingest service's
sweeper notices the job's lapsed lease and publishes it again. A second worker then finishes
it with exactly the file's chunk count: no duplicate points, none lost, and the previous
version's points stay searchable until the new ones are indexed.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from prometheus_client import REGISTRY

from services.ingest.api.server import build_spec
from services.ingest.documents.parsers import parse
from services.ingest.documents.splitter import split_segments
from services.ingest.tests.conftest import Dependencies, background_service, free_port, ingest_settings
from services.ingest.tests.worker.test_worker import REDIS_URL, TERMINAL, _drop_tables, celery_worker
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

TIMEOUT = 60
KILL_WINDOW_S = 240
FINISH_S = 300
LEASE_S = 3.0

# Long enough that embedding takes many seconds with small batches: the kill lands mid-job.
LONG_TEXT = "\n\n".join(
    f"第{i}条记录：编号{i * 7919 % 10007}的设备在第{i % 24}小时完成巡检，"
    f"检查了{i % 13 + 2}个部件，发现{i % 5}处需要维护的地方，并把结果写入知识库以便之后检索。"
    f"负责人在备注里写道：本条记录的校验码是{(i * 31337) % 99991}，请勿与其他记录混淆。"
    for i in range(500)
)
OLD_TEXT = "旧版本的手册只有一段话。它会在新版本索引完成后被替换。"


def _expected_chunks(name: str, data: bytes) -> int:
    return len(split_segments(parse(name, data), name, 250, 50))


@pytest.fixture(params=["sqla", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def _points(retrieve: retrieve_pb2_grpc.RetrieveServiceStub, kb: str) -> int:
    return retrieve.Stats(retrieve_pb2.StatsRequest(collection=kb), timeout=TIMEOUT).points


def _get(ingest: ingest_pb2_grpc.IngestServiceStub, job_id: str) -> ingest_pb2.Job:
    return ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=TIMEOUT)


def test_a_worker_killed_mid_job_leaves_it_to_be_finished_exactly_once(
    broker: str, dependencies: Dependencies, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    overrides: dict[str, object] = {}
    if broker == "redis":
        overrides = {"redis_url": REDIS_URL, "catalog_url": request.getfixturevalue("postgres_url")}
        _drop_tables(str(overrides["catalog_url"]))
    settings = ingest_settings(
        tmp_path,
        embed_addr=dependencies.embed_address,
        retrieve_addr=dependencies.retrieve_address,
        lease_s=LEASE_S,
        sweep_interval_s=0.5,
        embed_batch_size=8,
        upsert_batch_size=32,
        **overrides,
    )
    data = LONG_TEXT.encode()
    expected = _expected_chunks("manual.txt", data)
    assert expected > 200
    kb = f"crash_{uuid.uuid4().hex[:8]}"
    try:
        with (
            background_service(build_spec(settings), settings) as api,
            grpc.insecure_channel(api.address) as channel,
            grpc.insecure_channel(dependencies.retrieve_address) as retrieve_channel,
        ):
            ingest = ingest_pb2_grpc.IngestServiceStub(channel)
            retrieve = retrieve_pb2_grpc.RetrieveServiceStub(retrieve_channel)
            ingest.CreateKnowledgeBase(ingest_pb2.CreateKnowledgeBaseRequest(name=kb), timeout=TIMEOUT)
            with celery_worker(settings, free_port(), tmp_path / "worker-1.log") as worker:
                # An older version first: it must stay searchable through the crash.
                old = ingest.SubmitFile(
                    ingest_pb2.SubmitFileRequest(
                        knowledge_base=kb, file_name="manual.txt", content=OLD_TEXT.encode()
                    ),
                    timeout=TIMEOUT,
                )
                deadline = time.monotonic() + KILL_WINDOW_S
                while _get(ingest, old.id).state not in TERMINAL and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert _get(ingest, old.id).state == ingest_pb2.JOB_STATE_SUCCEEDED
                assert _points(retrieve, kb) == 1
                job = ingest.SubmitFile(
                    ingest_pb2.SubmitFileRequest(knowledge_base=kb, file_name="manual.txt", content=data),
                    timeout=TIMEOUT,
                )
                seen = None
                while time.monotonic() < deadline:
                    seen = _get(ingest, job.id)
                    if seen.state == ingest_pb2.JOB_STATE_EMBEDDING and 0.15 < seen.progress < 0.7:
                        break
                    assert seen.state not in TERMINAL, f"job ended before the kill: {seen}"
                    time.sleep(0.05)
                else:
                    pytest.fail(f"job never reached mid-embedding: {seen}")
                republished = REGISTRY.get_sample_value("zhiku_ingest_jobs_republished_total") or 0.0
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(30)
            # The worker is dead: the job is stuck mid-way, the old version still indexed.
            stuck = _get(ingest, job.id)
            assert stuck.state == ingest_pb2.JOB_STATE_EMBEDDING and stuck.progress < 1
            assert _points(retrieve, kb) == 1
            files = ingest.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=TIMEOUT)
            assert files.files[0].chunks == 1
            # The lease lapses, the sweeper re-queues; a fresh worker finishes the job.
            with celery_worker(settings, free_port(), tmp_path / "worker-2.log"):
                deadline = time.monotonic() + FINISH_S
                requeued = False
                current = ingest_pb2.Job()  # replaced on the first pass
                while time.monotonic() < deadline:
                    current = _get(ingest, job.id)
                    requeued = requeued or "stopped answering" in current.error
                    if current.state in TERMINAL:
                        break
                    time.sleep(0.2)
                log = (tmp_path / "worker-2.log").read_text(errors="replace")[-3000:]
                assert current.state == ingest_pb2.JOB_STATE_SUCCEEDED, f"{current}\n{log}"
            assert requeued or current.attempts == 2
            assert current.attempts == 2 and current.chunks == expected
            assert (REGISTRY.get_sample_value("zhiku_ingest_jobs_republished_total") or 0.0) > republished
            assert _points(retrieve, kb) == expected  # no duplicates, no loss, old version gone
            files = ingest.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=TIMEOUT)
            assert [(f.name, f.chunks) for f in files.files] == [("manual.txt", expected)]
    finally:
        if broker == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"*{settings.queue}*"):
                client.delete(key)
            client.close()
