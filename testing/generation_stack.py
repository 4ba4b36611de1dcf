"""The gateway and the generate service as real processes, the generate service on the openai
backend pointed at an OpenAI-protocol server (the fake, in a thread or its own process).

Only the two processes a chat needs are started (no ingest, embed, retrieve or worker), each in
its own session on free ports, and both are killed with their process groups on exit. Used by
``tests/e2e/test_generation.py``, ``bench/bench_generate.py`` and ``bench/bench_generate_queue.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.stack import free_port

REPO = Path(__file__).resolve().parents[1]
# Nothing listens on port 1: services a plain chat never calls point there, never at a stack
# another developer runs on the default ports.
UNUSED_ADDR = "127.0.0.1:1"


@dataclass
class GenerationStack:
    gateway_url: str
    generate_addr: str
    processes: list[subprocess.Popen[bytes]]


def _env(
    upstream_base_url: str, data_dir: Path, grpc_port: int, gateway_port: int, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIKU_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "ZHIKU_DATA_DIR": str(data_dir),
            "ZHIKU_LOG_JSON": "true",
            "ZHIKU_EMBED_ADDR": UNUSED_ADDR,
            "ZHIKU_RETRIEVE_ADDR": UNUSED_ADDR,
            "ZHIKU_INGEST_ADDR": UNUSED_ADDR,
            "ZHIKU_GENERATE_ADDR": f"127.0.0.1:{grpc_port}",
            "ZHIKU_GENERATE_GRPC_HOST": "127.0.0.1",
            "ZHIKU_GENERATE_GRPC_PORT": str(grpc_port),
            "ZHIKU_GENERATE_METRICS_PORT": "0",
            "ZHIKU_GENERATE_BACKEND": "openai",
            "ZHIKU_GENERATE_OPENAI_BASE_URL": upstream_base_url,
            "ZHIKU_GENERATE_OPENAI_MODEL": "fake-model",
            "ZHIKU_GENERATE_OPENAI_API_KEY": "test-key",
            "ZHIKU_GATEWAY_HOST": "127.0.0.1",
            "ZHIKU_GATEWAY_PORT": str(gateway_port),
        }
    )
    env.update(extra)
    return env


def _serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        try:
            reply: health_pb2.HealthCheckResponse = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _alive(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(processes: list[subprocess.Popen[bytes]], grace_s: float = 10) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def generation_stack(
    upstream_base_url: str, data_dir: Path, log_dir: Path, ready_timeout_s: float = 120, **extra_env: str
) -> Iterator[GenerationStack]:
    """Gateway + generate (openai backend -> ``upstream_base_url``), ready when yielded."""
    grpc_port, gateway_port = free_port(), free_port()
    env = _env(upstream_base_url, data_dir, grpc_port, gateway_port, **extra_env)
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("generate", "gateway"):
            with (log_dir / f"{name}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", f"services.{name}.server"],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        stack = GenerationStack(f"http://127.0.0.1:{gateway_port}", f"127.0.0.1:{grpc_port}", processes)
        deadline = time.monotonic() + ready_timeout_s
        while not (_serving(stack.generate_addr) and _alive(stack.gateway_url)):
            exited = [p.args for p in processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                logs = "\n".join(
                    (log_dir / f"{n}.log").read_text(errors="replace")[-2000:]
                    for n in ("generate", "gateway")
                )
                raise RuntimeError(f"generation stack did not start (exited: {exited}):\n{logs}")
            time.sleep(0.2)
        yield stack
    finally:
        stop(processes)
