"""What a real Celery worker does when things go wrong or get big: a dependency that goes away
and comes back, archives that lie about their size, and several files sharing the model.

Same shape as test_worker: the worker is a ``celery worker`` subprocess configured by
environment variables; the ingest API, the embed service (bundled USE model) and the retrieve
service (embedded Qdrant engine) run in this process on loopback ports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import redis

from services.common.config import CommonSettings
from services.ingest.api.server import build_spec
from services.ingest.config import IngestSettings
from services.ingest.documents.parsers import parse
from services.ingest.documents.splitter import split_segments
from services.ingest.tests.conftest import Dependencies, background_service, free_port, ingest_settings
from services.ingest.tests.documents import zips
from services.ingest.tests.worker.test_worker import CHINESE, REDIS_URL, TERMINAL, _drop_tables, celery_worker
from services.ingest.worker.pipeline import EMBED_START, INDEX_START
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec as build_retrieve_spec
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

TIMEOUT = 60
JOB_TIMEOUT_S = 240
CHUNK_SIZE, CHUNK_OVERLAP = 120, 20
# The worker's resident memory may grow by less than this while refusing four zip bombs at once.
RSS_GROWTH_LIMIT = 200 * 1024 * 1024


@contextmanager
def _api_and_worker(
    settings: IngestSettings, tmp_path: Path, concurrency: int = 2
) -> Iterator[tuple[ingest_pb2_grpc.IngestServiceStub, int]]:
    """The ingest API in this process and a worker subprocess: (API stub, worker pid)."""
    with (
        background_service(build_spec(settings), settings) as api,
        celery_worker(settings, free_port(), tmp_path / "worker.log", concurrency) as worker,
        grpc.insecure_channel(api.address) as channel,
    ):
        yield ingest_pb2_grpc.IngestServiceStub(channel), worker.pid


def _kb(ingest: ingest_pb2_grpc.IngestServiceStub) -> str:
    name = f"kb_{uuid.uuid4().hex[:8]}"
    ingest.CreateKnowledgeBase(ingest_pb2.CreateKnowledgeBaseRequest(name=name), timeout=TIMEOUT)
    return name


def _submit(ingest: ingest_pb2_grpc.IngestServiceStub, kb: str, name: str, content: bytes) -> str:
    request = ingest_pb2.SubmitFileRequest(
        knowledge_base=kb, file_name=name, content=content, chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP
    )
    return ingest.SubmitFile(request, timeout=TIMEOUT).id


def _get(ingest: ingest_pb2_grpc.IngestServiceStub, job_id: str) -> ingest_pb2.Job:
    return ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=TIMEOUT)


def _wait(ingest: ingest_pb2_grpc.IngestServiceStub, *job_ids: str) -> dict[str, ingest_pb2.Job]:
    final: dict[str, ingest_pb2.Job] = {}
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while len(final) < len(job_ids) and time.monotonic() < deadline:
        for job_id in set(job_ids) - set(final):
            if (job := _get(ingest, job_id)).state in TERMINAL:
                final[job_id] = job
        time.sleep(0.1)
    assert len(final) == len(job_ids), f"jobs not finished after {JOB_TIMEOUT_S} s"
    return final


def _expected_chunks(name: str, content: bytes) -> int:
    return len(split_segments(parse(name, content), name, CHUNK_SIZE, CHUNK_OVERLAP))


def _points(address: str, kb: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stats = retrieve_pb2_grpc.RetrieveServiceStub(channel).Stats(
            retrieve_pb2.StatsRequest(collection=kb), timeout=TIMEOUT
        )
    return stats.points if stats.exists else -1


# -- a dependency that goes away and comes back ---------------------------------------------


@pytest.mark.parametrize("broker", ["sqla", "redis"])
def test_a_retrieve_outage_makes_the_job_wait_and_it_finishes_when_retrieve_returns(
    broker: str, dependencies: Dependencies, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    overrides: dict[str, object] = {}
    if broker == "redis":
        overrides = {"redis_url": REDIS_URL, "catalog_url": request.getfixturevalue("postgres_url")}
        _drop_tables(str(overrides["catalog_url"]))
    retrieve_port = free_port()  # nothing listens here until the outage ends
    settings = ingest_settings(
        tmp_path,
        embed_addr=dependencies.embed_address,
        retrieve_addr=f"127.0.0.1:{retrieve_port}",
        max_attempts=1,  # waits are not crashes: they must not use these up
        retry_backoff_s=0.5,
        retry_backoff_factor=2,
        retry_backoff_max_s=2,
        retry_give_up_s=600,
        **overrides,
    )
    content = CHINESE.encode()
    expected = _expected_chunks("outage.txt", content)
    try:
        with _api_and_worker(settings, tmp_path) as (ingest, _):
            kb = _kb(ingest)
            job_id = _submit(ingest, kb, "outage.txt", content)
            deadline = time.monotonic() + JOB_TIMEOUT_S
            job = ingest_pb2.Job()  # replaced on the first pass
            while time.monotonic() < deadline:
                job = _get(ingest, job_id)
                assert job.state not in TERMINAL, f"the job ended during the outage: {job}"
                if job.state == ingest_pb2.JOB_STATE_QUEUED and job.attempts >= 2 and job.error:
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"the job never waited a second time: {job}")
            # What GetJob (and the gateway's GET /v1/jobs/{id}, which copies it) tells the user.
            assert job.error.startswith(f"waiting for retrieve (attempt {job.attempts}, next try ")
            assert "retrieve service: " in job.error
            retrieve_settings = RetrieveSettings(
                backend="edge",
                grpc_host="127.0.0.1",
                grpc_port=retrieve_port,
                metrics_port=0,
                shutdown_grace_s=0,
                common=CommonSettings(data_dir=tmp_path / "retrieve"),
            )
            with background_service(build_retrieve_spec(retrieve_settings), retrieve_settings) as retrieve:
                (done,) = _wait(ingest, job_id).values()
                assert done.state == ingest_pb2.JOB_STATE_SUCCEEDED, done
                assert (done.chunks, done.error) == (expected, "")
                assert done.progress == pytest.approx(1.0)
                assert done.attempts > job.attempts >= 2
                assert _points(retrieve.address, kb) == expected
    finally:
        if broker == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"*{settings.queue}*"):
                client.delete(key)
            client.close()


# -- archives that lie about their size -----------------------------------------------------


def _memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident since start or the last reset), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        key: int(value.split()[0])
        for key, value in (line.split(":", 1) for line in status)
        if key in ("VmRSS", "VmHWM")
    }


def test_four_lying_zips_at_once_fail_as_zip_bombs_while_the_workers_memory_stays_flat(
    dependencies: Dependencies, tmp_path: Path
) -> None:
    """Each member declares 1,000 bytes and inflates to 1.5 GiB (1.5 MB on disk)."""
    settings = ingest_settings(
        tmp_path, embed_addr=dependencies.embed_address, retrieve_addr=dependencies.retrieve_address
    )
    bomb = zips.build(zips.lying("notes.txt", 1000, inflated_mib=1536))
    assert len(bomb) < 2 * zips.MIB
    with _api_and_worker(settings, tmp_path, concurrency=4) as (ingest, worker_pid):
        kb = _kb(ingest)
        # Warm up: the first zip job imports and opens everything the worker needs.
        warm = _submit(ingest, kb, "warm.zip", zips.build(zips.honest("a.txt", CHINESE.encode())))
        assert _wait(ingest, warm)[warm].state == ingest_pb2.JOB_STATE_SUCCEEDED
        before = _memory_kib(worker_pid)["VmRSS"]
        Path(f"/proc/{worker_pid}/clear_refs").write_text("5")  # the peak starts again from now
        jobs = [_submit(ingest, kb, f"bomb{i}.zip", bomb) for i in range(4)]
        final = _wait(ingest, *jobs)
        peak = _memory_kib(worker_pid)["VmHWM"]
    growth = (peak - before) * 1024
    print(f"worker RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB: +{growth / 2**20:.1f} MiB")
    for job in final.values():
        assert job.state == ingest_pb2.JOB_STATE_FAILED
        assert job.error == (
            f"{job.file_name}: member 'notes.txt' declares 1,000 bytes but inflates to more; "
            "refused at the first byte past its declared size (zip bomb?)"
        )
    assert growth < RSS_GROWTH_LIMIT, f"the worker grew by {growth / 2**20:.0f} MiB"


# -- several files sharing the model ------------------------------------------------------


def test_files_uploaded_together_each_show_their_progress_while_they_share_the_model(
    dependencies: Dependencies, tmp_path: Path
) -> None:
    """Every job's stage and progress move with its own work: none sits at "parsing, 0 %" while
    the others embed, and none leaves embedding before the others are well under way."""
    settings = ingest_settings(
        tmp_path,
        embed_addr=dependencies.embed_address,
        retrieve_addr=dependencies.retrieve_address,
        embed_batch_size=8,  # many Embed calls per file
    )
    files = {
        f"manual{n}.txt": "\n".join(
            f"第{n}册第{i}条：设备{i * 7919 % 10007}号完成巡检，检查了{i % 13 + 2}个部件，结果写入知识库。"
            for i in range(800)
        ).encode()
        for n in range(4)
    }
    with _api_and_worker(settings, tmp_path, concurrency=4) as (ingest, _):
        kb = _kb(ingest)
        jobs = {_submit(ingest, kb, name, content): name for name, content in files.items()}
        seen: dict[str, list[tuple[int, float]]] = {job_id: [] for job_id in jobs}
        first_out_of_embedding: dict[str, list[tuple[int, float]]] | None = None
        deadline = time.monotonic() + JOB_TIMEOUT_S
        current = {job_id: ingest_pb2.Job() for job_id in jobs}  # replaced on the first pass
        while time.monotonic() < deadline:
            current = {job_id: _get(ingest, job_id) for job_id in jobs}
            for job_id, job in current.items():
                seen[job_id].append((job.state, job.progress))
            past = [job for job in current.values() if job.progress >= INDEX_START or job.state in TERMINAL]
            if past and first_out_of_embedding is None:
                first_out_of_embedding = {job_id: list(samples) for job_id, samples in seen.items()}
            if all(job.state in TERMINAL for job in current.values()):
                break
            time.sleep(0.03)
    assert first_out_of_embedding is not None
    print(
        "when the first file left embedding:",
        {
            jobs[job_id]: round(max(value for _, value in samples), 2)
            for job_id, samples in first_out_of_embedding.items()
        },
    )
    for job_id, job in current.items():
        name = jobs[job_id]
        assert job.state == ingest_pb2.JOB_STATE_SUCCEEDED, job
        assert (job.attempts, job.chunks) == (1, _expected_chunks(name, files[name]))
        progress = [value for _, value in seen[job_id]]
        assert progress == sorted(progress), f"{name}: progress went backwards: {progress}"
        embedding = {
            round(value, 3)
            for state, value in seen[job_id]
            if state == ingest_pb2.JOB_STATE_EMBEDDING and EMBED_START < value < INDEX_START
        }
        assert len(embedding) >= 2, f"{name}: too few progress steps while embedding: {sorted(embedding)}"
    # When the first file left embedding, every file had done a good part of its own: the model
    # was shared, not handed to one file at a time while the others sat at "parsing, 0 %".
    quarter = EMBED_START + (INDEX_START - EMBED_START) / 4
    for job_id, samples in first_out_of_embedding.items():
        assert max(value for _, value in samples) >= quarter, (jobs[job_id], samples[-5:])
