"""``make run`` (``python -m launcher``): the whole stack on one machine, one process per service,
one log stream.

Each service runs as its own process exactly as it would in a pod, so the embedded stack
exercises the same gRPC boundaries as production. The launcher waits for every service's
gRPC health (and the gateway's /readyz), prefixes each child's output with its name, and on
Ctrl-C or SIGTERM stops the children's whole process groups, leaving no orphans behind.

Supervision: once the stack is ready, a child that exits (any code, any signal) is started
again with the same command, environment and ports after an exponential back-off
(:mod:`launcher.supervision`: 1 s doubling to 30 s, reset after a minute up), while the
others keep serving; the gateway answers the dead service's clients 503 naming it. The log
says ``retrieve exited with -9 (SIGKILL) after 42.0 s up; restart 1 in 1.0 s``, then
``retrieve restarted (restart 1, pid ...)`` and ``retrieve is serving again (restart 1,
3.1 s after it exited)``; ``zhiku_stack_restarts_total{service}`` counts the restarts on
the launcher's own metrics port (``metrics.stack`` in ``stack-ports.json``, 9106 by
default). Only Ctrl-C or SIGTERM stops the stack. A child that exits before the stack first
became ready still stops it, with its exit code: at startup that is a configuration error
(a port in use, a bad setting) that restarting would only repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from launcher.supervision import RESTARTS, RestartBackoff, RestartRecord
from services.common.lifetime import die_with_parent

GRPC_SERVICES = ("embed", "retrieve", "generate", "ingest")
# The module each gRPC service process runs (ingest keeps its API apart from its worker).
SERVER_MODULES = {
    "embed": "services.embed.server",
    "retrieve": "services.retrieve.server",
    "generate": "services.generate.server",
    "ingest": "services.ingest.api.server",
}
DEFAULT_GRPC_PORTS = {"embed": 50051, "retrieve": 50052, "generate": 50053, "ingest": 50054}
DEFAULT_METRICS_PORTS = {"embed": 9101, "retrieve": 9102, "generate": 9103, "ingest": 9104, "worker": 9105}
COLORS = {"embed": 36, "retrieve": 35, "generate": 33, "ingest": 34, "worker": 32, "gateway": 31}
# The launcher's own metrics (restarts), recorded under this name beside the children's ports.
LAUNCHER = "stack"
DEFAULT_LAUNCHER_METRICS_PORT = 9106
PORTS_FILE = "stack-ports.json"  # written into the data dir: every port this run listens on


def _child_dies_with_launcher() -> None:
    """Child-side: be killed if the launcher dies, even by SIGKILL, so nothing is orphaned."""
    die_with_parent(signal.SIGTERM, own_process_group=True)


# Ports handed out by free_port in this process: the next pick skips them.
_handed_out: set[int] = set()


def _ephemeral_low(default: int = 32768) -> int:
    """The first port of the kernel's range for outgoing connections (Linux: its sysctl)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_port() -> int:
    """A port nothing listens on, for a child to bind a moment later.

    Picked below the kernel's ephemeral range, not with ``bind(0)``: a ``bind(0)`` port is one
    the kernel also gives to outgoing connections (to PostgreSQL, Redis, another service), and
    one of those took it before the child bound it often enough to fail a whole stack in CI.
    """
    high = _ephemeral_low()
    low = max(1024, high - 12000)
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # that range is full: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ports:
    grpc: dict[str, int]
    metrics: dict[str, int]
    gateway: int

    @classmethod
    def defaults(cls, gateway: int) -> Ports:
        metrics = {**DEFAULT_METRICS_PORTS, LAUNCHER: DEFAULT_LAUNCHER_METRICS_PORT}
        return cls(dict(DEFAULT_GRPC_PORTS), metrics, gateway)

    def write(self, path: Path) -> None:
        """Record the chosen ports, so tools started beside the stack (a test's Prometheus) find them."""
        document = {"grpc": self.grpc, "metrics": self.metrics, "gateway": self.gateway}
        path.write_text(json.dumps(document, indent=2, sort_keys=True), encoding="utf-8")

    @classmethod
    def free(cls, gateway: int | None = None) -> Ports:
        """Free ports for everything, except the gateway when a port is asked for."""
        return cls(
            {name: free_port() for name in DEFAULT_GRPC_PORTS},
            {name: free_port() for name in [*DEFAULT_METRICS_PORTS, LAUNCHER]},
            gateway or free_port(),
        )


def choose_ports(free: bool, gateway: int | None, default_gateway: int) -> Ports:
    """``--free-ports`` picks free ports, but a gateway port asked for with ``--port`` stays."""
    if free:
        return Ports.free(gateway)
    return Ports.defaults(gateway or default_gateway)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    buffer: bytes = field(default=b"")
    restarts: RestartRecord = field(default_factory=lambda: RestartRecord(RestartBackoff()))
    started_at: float = 0.0  # monotonic, of the current process
    restart_due: float | None = None  # set while waiting out the back-off
    exited_at: float | None = None  # set from an exit until it serves again


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
        if name == LAUNCHER:
            continue
        key = "INGEST_WORKER" if name == "worker" else name.upper()
        env[f"ZHIKU_{key}_METRICS_PORT"] = str(port)
    env["ZHIKU_GATEWAY_PORT"] = str(ports.gateway)
    return env


def build_children(ports: Ports, data_dir: Path, worker_concurrency: int) -> list[Child]:
    python = sys.executable
    env = stack_env(ports, data_dir)
    children = [Child(name, [python, "-m", SERVER_MODULES[name]], env) for name in GRPC_SERVICES]
    worker_argv = [
        python,
        "-m",
        "celery",
        "-A",
        "services.ingest.worker.celery_app",
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


def describe_exit(returncode: int) -> str:
    """``-9 (SIGKILL)`` for a signal, the plain code otherwise."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{returncode} ({signal.Signals(-returncode).name})"
    return str(returncode)


class Stack:
    def __init__(self, children: list[Child], ports: Ports, color: bool) -> None:
        self.children = children
        self.ports = ports
        self.color = color
        self.selector = selectors.DefaultSelector()

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
            RESTARTS.labels(child.name)  # every service's series exists from the start, at 0

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_child_dies_with_launcher,
        )
        child.started_at = time.monotonic()
        assert child.process.stdout is not None  # stdout=PIPE above
        os.set_blocking(child.process.stdout.fileno(), False)
        self.selector.register(child.process.stdout, selectors.EVENT_READ, child)

    def supervise(self) -> None:
        """One pass: schedule a restart for each child that exited, start those whose back-off
        is over, and say when a restarted child serves again."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_due is not None:
                if now >= child.restart_due:
                    self._restart(child)
            elif child.process is not None and child.process.poll() is not None:
                self._schedule_restart(child, now)
            elif child.exited_at is not None and self.serving(child.name):
                self.say(
                    f"{child.name} is serving again (restart {child.restarts.total}, "
                    f"{time.monotonic() - child.exited_at:.1f} s after it exited)"
                )
                child.exited_at = None

    def _schedule_restart(self, child: Child, now: float) -> None:
        process = child.process
        assert process is not None and process.returncode is not None
        self._reap(child)
        delay = child.restarts.exited(uptime_s=now - child.started_at)
        child.exited_at = child.exited_at or now
        child.restart_due = now + delay
        self.say(
            f"{child.name} exited with {describe_exit(process.returncode)} after "
            f"{now - child.started_at:.1f} s up; restart {child.restarts.total + 1} in {delay:.1f} s"
        )

    def _reap(self, child: Child) -> None:
        """The exited child's leftovers: any process still in its group (SIGKILL), and the
        last of its output, before a new process takes its name and ports."""
        process = child.process
        assert process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout = process.stdout
        if stdout is None or stdout.closed:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(stdout)
        with contextlib.suppress(OSError):
            rest = stdout.read()
            if rest:
                child.buffer += rest
        if child.buffer:
            for line in child.buffer.split(b"\n"):
                if line:
                    self._emit(child, line)
            child.buffer = b""
        stdout.close()

    def _restart(self, child: Child) -> None:
        child.restart_due = None
        self._spawn(child)
        child.restarts.total += 1
        RESTARTS.labels(child.name).inc()
        assert child.process is not None
        self.say(f"{child.name} restarted (restart {child.restarts.total}, pid {child.process.pid})")

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
            stream = cast(IO[bytes], key.fileobj)  # what _spawn registered: the child's stdout pipe
            try:
                data = stream.read()
            except (BlockingIOError, OSError):
                continue
            if not data:
                self.selector.unregister(stream)
                stream.close()
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
                reply: health_pb2.HealthCheckResponse = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _gateway_ready(self) -> bool:
        return self._http_ok(f"http://127.0.0.1:{self.ports.gateway}/readyz")

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            reply = httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    def serving(self, name: str) -> bool:
        """Whether one restarted child answers again: gRPC health for the services, /healthz
        for the gateway (its /readyz also waits for the other services), and the metrics
        port for the worker, which it opens first thing in worker_init."""
        if name == "gateway":
            return self._http_ok(f"http://127.0.0.1:{self.ports.gateway}/healthz")
        if name == "worker":
            return self._http_ok(f"http://127.0.0.1:{self.ports.metrics['worker']}/metrics")
        return self._grpc_ready(name)

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
            child.restart_due = None
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
    """Start ``python -m launcher --free-ports`` and wait for its ready line.

    Only the given environment reaches the stack (``ZHIKU_*`` of the caller are dropped), so a
    test or benchmark runs the defaults unless it names what it changes.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIKU_")}
    child_env.update(env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--free-ports", "--data-dir", str(data_dir)],
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
    parser.add_argument(
        "--port", type=int, default=None, help="gateway port [default: $ZHIKU_GATEWAY_PORT or 8000]"
    )
    parser.add_argument(
        "--free-ports", action="store_true", help="pick free ports (tests); the gateway keeps --port if given"
    )
    # Files in flight per worker (threads): the worker packs their chunks into large Embed calls.
    parser.add_argument("--worker-concurrency", type=int, default=16)
    parser.add_argument("--ready-timeout", type=float, default=300)
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = choose_ports(args.free_ports, args.port, int(os.environ.get("ZHIKU_GATEWAY_PORT", "8000")))
    try:
        start_http_server(ports.metrics[LAUNCHER])
    except OSError as error:
        sys.stderr.write(f"zhiku: the launcher's metrics port {ports.metrics[LAUNCHER]} is taken: {error}\n")
        return 1
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
        # exited() holds only children with a process; the check is for the type checker.
        failed = ", ".join(
            f"{c.name} (exit {c.process.returncode if c.process else None})" for c in stack.exited()
        )
        stack.say(f"stack failed to start: {failed or 'timed out waiting for readiness'}")
        stack.stop()
        return 1
    stack.say(f"ready: http://127.0.0.1:{ports.gateway}")
    while not stopping:
        stack.pump(0.5)
        stack.supervise()
    stack.say("stopping")
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
