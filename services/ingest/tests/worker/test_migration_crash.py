"""A migration whose worker is SIGKILLed mid-way is resumed by another worker and still ends
with exact counts: the sweeper re-queues it once its lease lapses, files already in the new
collection are not embedded again, and the knowledge base answered from its old collection
all along. Real embed (USE by default, e5 as the extra model), retrieve and Celery worker."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.common.config import CommonSettings
from services.embed.config import EmbedSettings
from services.embed.server import build_spec as build_embed_spec
from services.ingest.api.server import build_spec
from services.ingest.tests.conftest import Dependencies, background_service, free_port, ingest_settings
from services.ingest.tests.worker.test_worker import TERMINAL, celery_worker
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec as build_retrieve_spec
from zhiku.v1 import embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

TIMEOUT = 60
FILES = {
    f"记录{i}.txt": (f"第{i}号设备在第{i % 24}小时完成巡检，检查了{i % 13 + 2}个部件。" * 6).encode()
    for i in range(24)
}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dependencies]:
    base = tmp_path_factory.mktemp("deps")
    server: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 0,
    }
    embed_settings = EmbedSettings(
        backend="local",
        local_model="use",
        extra_models=["e5"],
        common=CommonSettings(data_dir=base),
        **server,
    )
    retrieve_settings = RetrieveSettings(
        backend="edge", common=CommonSettings(data_dir=base / "retrieve"), **server
    )
    with (
        background_service(build_embed_spec(embed_settings), embed_settings) as embed,
        background_service(build_retrieve_spec(retrieve_settings), retrieve_settings) as retrieve,
        grpc.insecure_channel(embed.address) as channel,
    ):
        info = embed_pb2_grpc.EmbedServiceStub(channel).Info(embed_pb2.EmbedInfoRequest(), timeout=60)
        yield Dependencies(embed.address, retrieve.address, info.model)


def _wait(ingest: ingest_pb2_grpc.IngestServiceStub, job_id: str, limit_s: float = 240) -> ingest_pb2.Job:
    deadline = time.monotonic() + limit_s
    while True:
        job = ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=TIMEOUT)
        if job.state in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_a_migration_killed_mid_way_is_resumed_with_exact_counts(
    two_models: Dependencies, tmp_path: Path
) -> None:
    settings = ingest_settings(
        tmp_path,
        embed_addr=two_models.embed_address,
        retrieve_addr=two_models.retrieve_address,
        lease_s=3.0,
        sweep_interval_s=0.5,
        migration_drop_delay_s=0.5,
        embed_batch_size=2,
    )
    kb = f"migrate_{uuid.uuid4().hex[:8]}"
    with (
        background_service(build_spec(settings), settings) as api,
        grpc.insecure_channel(api.address) as channel,
        grpc.insecure_channel(two_models.retrieve_address) as retrieve_channel,
    ):
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        retrieve = retrieve_pb2_grpc.RetrieveServiceStub(retrieve_channel)

        def stats(collection: str) -> retrieve_pb2.StatsResponse:
            return retrieve.Stats(retrieve_pb2.StatsRequest(collection=collection), timeout=TIMEOUT)

        ingest.CreateKnowledgeBase(ingest_pb2.CreateKnowledgeBaseRequest(name=kb), timeout=TIMEOUT)
        with celery_worker(settings, free_port(), tmp_path / "worker-1.log") as worker:
            jobs = [
                ingest.SubmitFile(
                    ingest_pb2.SubmitFileRequest(knowledge_base=kb, file_name=name, content=data),
                    timeout=TIMEOUT,
                )
                for name, data in FILES.items()
            ]
            assert all(_wait(ingest, job.id).state == ingest_pb2.JOB_STATE_SUCCEEDED for job in jobs)
            before = ingest.GetKnowledgeBase(ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=TIMEOUT)
            migration = ingest.MigrateKnowledgeBase(
                ingest_pb2.MigrateKnowledgeBaseRequest(knowledge_base=kb, embed_model="e5"), timeout=TIMEOUT
            )
            deadline = time.monotonic() + 240
            while True:
                seen = ingest.GetJob(ingest_pb2.GetJobRequest(id=migration.id), timeout=TIMEOUT)
                if seen.state == ingest_pb2.JOB_STATE_EMBEDDING and 0.1 < seen.progress < 0.8:
                    break
                assert seen.state not in TERMINAL and time.monotonic() < deadline, (
                    f"not killed mid-way: {seen}"
                )
                time.sleep(0.02)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
        stuck = ingest.GetKnowledgeBase(ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=TIMEOUT)
        assert (stuck.collection, stuck.embed_model, stuck.migration_job) == (
            kb,
            before.embed_model,
            migration.id,
        )
        assert 0 < stats(f"{kb}__v2").points < before.chunk_count  # half-filled, never searched
        with celery_worker(settings, free_port(), tmp_path / "worker-2.log"):
            done = _wait(ingest, migration.id)
            log = (tmp_path / "worker-2.log").read_text(errors="replace")[-3000:]
            assert done.state == ingest_pb2.JOB_STATE_SUCCEEDED, f"{done}\n{log}"
        assert done.attempts == 2 and done.chunks == before.chunk_count
        after = ingest.GetKnowledgeBase(ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=TIMEOUT)
        assert (after.collection, after.chunk_count, after.migration_job) == (
            f"{kb}__v2",
            before.chunk_count,
            "",
        )
        assert "multilingual-e5-small" in after.embed_model
        new = stats(f"{kb}__v2")
        assert (new.points, new.dimension) == (before.chunk_count, 384)
        deadline = time.monotonic() + 30
        while stats(kb).exists:
            assert time.monotonic() < deadline, "the old collection was never dropped"
            time.sleep(0.2)
