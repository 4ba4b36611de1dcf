"""The whole stack for end-to-end gateway tests: the four real services in-process, a real
Celery worker process (the production entry point), and the gateway behind real uvicorn.

Embedded defaults throughout: SQLite catalog and Celery's SQLAlchemy transport in a temporary
directory, Qdrant Edge vectors, the bundled USE embedding model, the extractive generator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.common.config import CommonSettings
from services.embed.config import EmbedSettings
from services.embed.server import build_spec as build_embed
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.generate.config import GenerateSettings
from services.generate.server import build_spec as build_generate
from services.ingest.api.server import build_spec as build_ingest
from services.ingest.config import IngestSettings
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec as build_retrieve

from .support import running_service, served

# Small enough that a test can cross it with a few kilobytes.
INGEST_MAX_FILE_MB = 0.05


@dataclass
class Stack:
    url: str
    addresses: dict[str, str]
    worker_log: Path
    data_dir: Path  # catalog.db there holds the ingest catalog and the gateway's gw_ tables
    app: FastAPI | None = None  # the gateway app being served


def _worker(data_dir: Path, ingest: IngestSettings, addresses: dict[str, str], log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "ZHIKU_DATA_DIR": str(data_dir),
        "ZHIKU_LOG_JSON": "false",
        "ZHIKU_EMBED_ADDR": addresses["embed"],
        "ZHIKU_RETRIEVE_ADDR": addresses["retrieve"],
        "ZHIKU_INGEST_CATALOG_URL": ingest.catalog_url,
        "ZHIKU_INGEST_REDIS_URL": "",
        "ZHIKU_INGEST_BLOB_DIR": str(ingest.blob_dir),
        "ZHIKU_INGEST_QUEUE": ingest.queue,
        "ZHIKU_INGEST_WORKER_METRICS_PORT": "0",
        "ZHIKU_INGEST_MAX_FILE_MB": str(ingest.max_file_mb),
        "ZHIKU_INGEST_SOURCES_KEY": ingest.sources_key,
        "ZHIKU_INGEST_MIGRATION_DROP_DELAY_S": str(ingest.migration_drop_delay_s),
        "ZHIKU_INGEST_SOURCES_ALLOW_PRIVATE_NETWORKS": str(ingest.sources_allow_private_networks).lower(),
    }
    if ingest.sources_root is not None:
        env["ZHIKU_INGEST_SOURCES_ROOT"] = str(ingest.sources_root)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "services.ingest.worker.celery_app",
        "worker",
        "--loglevel=INFO",
        "--pool=threads",
        "--concurrency=2",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    with log.open("wb") as sink:
        return subprocess.Popen(
            argv, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


@asynccontextmanager
async def running_stack(
    data_dir: Path,
    generate: dict[str, Any] | None = None,
    ingest: dict[str, Any] | None = None,
    retrieve: dict[str, Any] | None = None,
    embed: dict[str, Any] | None = None,
    **gateway_overrides: Any,
) -> AsyncIterator[Stack]:
    """The stack; ``generate`` overrides the generate service's settings (extractive by default),
    ``ingest`` the ingest service's (and its worker's, for the sources' settings and the
    migration's drop delay), ``retrieve`` the retrieve service's (Qdrant Edge by default;
    ``{"backend": "qdrant", "qdrant_path": ...}`` runs the qdrant-client backend), ``embed``
    the embed service's (extra models)."""
    common = CommonSettings(data_dir=data_dir, log_json=False)
    async with AsyncExitStack() as stack:
        embed_settings = EmbedSettings(
            **{"backend": "local", "local_model": "use", "metrics_port": 0, "common": common, **(embed or {})}
        )
        retrieve_settings = RetrieveSettings(
            **{
                "backend": "edge",
                "metrics_port": 0,
                "edge_optimize_delay_s": 0,
                "common": common,
                **(retrieve or {}),
            }
        )
        generate_settings = GenerateSettings(
            **{"backend": "extractive", "metrics_port": 0, "common": common, **(generate or {})}
        )
        embed_service = await stack.enter_async_context(
            running_service(build_embed(embed_settings), embed_settings)
        )
        retrieve_service = await stack.enter_async_context(
            running_service(build_retrieve(retrieve_settings), retrieve_settings)
        )
        generate_service = await stack.enter_async_context(
            running_service(build_generate(generate_settings), generate_settings)
        )
        addresses = {
            "embed": f"127.0.0.1:{embed_service.port}",
            "retrieve": f"127.0.0.1:{retrieve_service.port}",
            "generate": f"127.0.0.1:{generate_service.port}",
        }
        wired = common.model_copy(update={f"{name}_addr": address for name, address in addresses.items()})
        ingest_settings = IngestSettings(
            **{
                "metrics_port": 0,
                "catalog_url": f"sqlite:///{data_dir / 'catalog.db'}",
                "redis_url": "",
                "blob_dir": data_dir / "blobs",
                "queue": f"zhiku-gw-test-{uuid.uuid4().hex[:8]}",
                "metrics_refresh_s": 0,
                "max_file_mb": INGEST_MAX_FILE_MB,
                "common": wired,
                **(ingest or {}),
            }
        )
        ingest_service = await stack.enter_async_context(
            running_service(build_ingest(ingest_settings), ingest_settings)
        )
        addresses["ingest"] = f"127.0.0.1:{ingest_service.port}"

        worker_log = data_dir / "worker.log"
        worker = _worker(data_dir, ingest_settings, addresses, worker_log)

        def stop_worker() -> None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

        stack.callback(stop_worker)
        gateway = GatewaySettings(
            common=common.model_copy(update={f"{name}_addr": address for name, address in addresses.items()}),
            **gateway_overrides,
        )
        app = create_app(gateway)
        url = await stack.enter_async_context(served(app))
        yield Stack(url=url, addresses=addresses, worker_log=worker_log, data_dir=data_dir, app=app)
