"""``make run``: the whole stack on one machine, one process per service, one log stream.

Each service runs as its own process exactly as it would in a pod, so the embedded stack
exercises the same gRPC boundaries as production. The launcher waits for every service's
gRPC health (and the gateway's /readyz), prefixes each child's output with its name, and on
Ctrl-C or SIGTERM stops the children's whole process groups, leaving no orphans behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

GRPC_SERVICES = ("embed", "retrieve", "generate", "ingest")
DEFAULT_GRPC_PORTS = {"embed": 50051, "retrieve": 50052, "generate": 50053, "ingest": 50054}
DEFAULT_METRICS_PORTS = {"embed": 9101, "retrieve": 9102, "generate": 9103, "ingest": 9104, "worker": 9105}
COLORS = {"embed": 36, "retrieve": 35, "generate": 33, "ingest": 34, "worker": 32, "gateway": 31}
_PR_SET_PDEATHSIG = 1
PORTS_FILE = "stack-ports.json"  # written into the data dir: every port this run listens on


def _die_with_parent() -> None:
    """Child-side: be killed if the launcher dies, even by SIGKILL, so nothing is orphaned."""
    os.setpgrp()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Ports:
    grpc: dict[str, int]
    metrics: dict[str, int]
    gateway: int

    @classmethod
    def defaults(cls, gateway: int) -> Ports:
        return cls(dict(DEFAULT_GRPC_PORTS), dict(DEFAULT_METRICS_PORTS), gateway)

    def write(self, path: Path) -> None:
        """Record the chosen ports, so tools started beside the stack (a test's Prometheus) find them."""
        document = {"grpc": self.grpc, "metrics": self.metrics, "gateway": self.gateway}
        path.write_text(json.dumps(document, indent=2, sort_keys=True), encoding="utf-8")

    @classmethod
    def free(cls) -> Ports:
        return cls(
            {name: free_port() for name in DEFAULT_GRPC_PORTS},
            {name: free_port() for name in DEFAULT_METRICS_PORTS},
            free_port(),
        )


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    buffer: bytes = field(default=b"")


def stack_env(ports: Ports, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["ZHIKU_DATA_DIR"] = str(data_dir)
    env.setdefault("ZHIKU_LOG_JSON", "true")
    for name, port in ports.grpc.items():
        env[f"ZHIKU_{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
        env[f"ZHIKU_{name.upper()}_GRPC_PORT"] = str(port)
        env[f"ZHIKU_{name.upper()}_GRPC_HOST"] = "127.0.0.1"
    for name, port in ports.metrics.items():
        key = "INGEST_WORKER" if name == "worker" else name.upper()
        env[f"ZHIKU_{key}_METRICS_PORT"] = str(port)
    env["ZHIKU_GATEWAY_PORT"] = str(ports.gateway)
    return env


def build_children(ports: Ports, data_dir: Path, worker_concurrency: int) -> list[Child]:
    python = sys.executable
    env = stack_env(ports, data_dir)
    children = [Child(name, [python, "-m", f"services.{name}.server"], env) for name in GRPC_SERVICES]
    worker_argv = [
        python,
        "-m",
        "celery",
        "-A",
        "services.ingest.celery_app",
        "worker",
        "--loglevel=INFO",
        "--pool=threads",
        f"--concurrency={worker_concurrency}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    children.append(Child("worker", worker_argv, env))
    children.append(Child("gateway", [python, "-m", "services.gateway.server"], env))
    return children


class Stack:
    def __init__(self, children: list[Child], ports: Ports, color: bool) -> None:
        self.children = children
        self.ports = ports
        self.color = color
        self.selector = selectors.DefaultSelector()

    def start(self) -> None:
        for child in self.children:
            child.process = subprocess.Popen(
                child.argv,
                env=child.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            os.set_blocking(child.process.stdout.fileno(), False)
            self.selector.register(child.process.stdout, selectors.EVENT_READ, child)

    def _emit(self, child: Child, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        prefix = f"{child.name:>8} |"
        if self.color:
            prefix = f"\x1b[{COLORS.get(child.name, 37)}m{prefix}\x1b[0m"
        sys.stdout.write(f"{prefix} {text}\n")
        sys.stdout.flush()

    def pump(self, timeout: float) -> None:
        """Forward whatever the children printed, line by line, with their name in front."""
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            try:
                data = key.fileobj.read()  # type: ignore[union-attr]
            except (BlockingIOError, OSError):
                continue
            if not data:
                self.selector.unregister(key.fileobj)
                if child.buffer:
                    self._emit(child, child.buffer)
                    child.buffer = b""
                continue
            child.buffer += data
            *lines, child.buffer = child.buffer.split(b"\n")
            for line in lines:
                self._emit(child, line)

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.process is not None and c.process.poll() is not None]

    def _grpc_ready(self, name: str) -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{self.ports.grpc[name]}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _gateway_ready(self) -> bool:
        try:
            reply = httpx.get(f"http://127.0.0.1:{self.ports.gateway}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    def wait_ready(self, timeout_s: float) -> bool:
        pending = set(GRPC_SERVICES) | {"gateway"}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            self.pump(0.5)
            if self.exited():
                return False
            for name in sorted(pending):
                ready = self._gateway_ready() if name == "gateway" else self._grpc_ready(name)
                if ready:
                    pending.discard(name)
                    self.say(f"{name} is ready")
        return not pending

    def say(self, message: str) -> None:
        sys.stdout.write(f"{'zhiku':>8} | {message}\n")
        sys.stdout.flush()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every child's process group, then SIGKILL what is left after the grace."""
        for child in self.children:
            if child.process and child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(
            c.process and c.process.poll() is None for c in self.children
        ):
            self.pump(0.2)
        for child in self.children:
            if child.process is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        self.pump(0)


READY_LINE = re.compile(r"ready: (http://127\.0\.0\.1:\d+)")


@dataclass
class BackgroundStack:
    """A stack launched as a child process, for tests and benchmarks that speak HTTP to it."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 30) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def launch_in_background(
    data_dir: Path, log_path: Path, env: dict[str, str] | None = None, ready_timeout_s: float = 420
) -> BackgroundStack:
    """Start ``python -m services.stack --free-ports`` and wait for its ready line.

    Only the given environment reaches the stack (``ZHIKU_*`` of the caller are dropped), so a
    test or benchmark runs the defaults unless it names what it changes.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIKU_")}
    child_env.update(env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.stack", "--free-ports", "--data-dir", str(data_dir)],
            cwd=Path(__file__).resolve().parents[1],
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        match = READY_LINE.search(log_path.read_text(errors="replace"))
        if match:
            return BackgroundStack(match.group(1), process, log_path)
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    tail = log_path.read_text(errors="replace")[-4000:]
    raise RuntimeError(f"stack did not become ready (exit {process.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole Zhiku stack on this machine.")
    parser.add_argument("--data-dir", default=os.environ.get("ZHIKU_DATA_DIR", "data"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ZHIKU_GATEWAY_PORT", "8000")))
    parser.add_argument("--free-ports", action="store_true", help="pick free ports (tests)")
    # Files in flight per worker (threads): the worker packs their chunks into large Embed calls.
    parser.add_argument("--worker-concurrency", type=int, default=16)
    parser.add_argument("--ready-timeout", type=float, default=300)
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = Ports.free() if args.free_ports else Ports.defaults(args.port)
    ports.write(data_dir / PORTS_FILE)
    stack = Stack(build_children(ports, data_dir, args.worker_concurrency), ports, sys.stdout.isatty())

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    stack.start()
    stack.say(f"starting {len(stack.children)} processes, data in {data_dir}")
    if not stack.wait_ready(args.ready_timeout):
        failed = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in stack.exited())
        stack.say(f"stack failed to start: {failed or 'timed out waiting for readiness'}")
        stack.stop()
        return 1
    stack.say(f"ready: http://127.0.0.1:{ports.gateway}")
    while not stopping:
        stack.pump(0.5)
        dead = stack.exited()
        if dead:
            stack.say(f"{dead[0].name} exited with {dead[0].process.returncode}; stopping the stack")
            stack.stop()
            return 1
    stack.say("stopping")
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
