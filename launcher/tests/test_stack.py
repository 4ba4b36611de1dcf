"""The launcher's supervision with real child processes (small stand-ins for the services),
its restart back-off, and the ports it picks. The whole stack under kills: tests/e2e."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from launcher.stack import (
    DEFAULT_GRPC_PORTS,
    LAUNCHER,
    Child,
    Ports,
    Stack,
    choose_ports,
    describe_exit,
    free_port,
    stack_env,
)
from launcher.supervision import RestartBackoff, RestartRecord

# Stands in for the gateway: answers 200 on every path, on the port given as its argument.
HTTP_CHILD = """
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
print("listening on", sys.argv[1], flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = RestartBackoff(initial_s=1, factor=2, cap_s=30)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30  # no overflow in a long crash loop
    with pytest.raises(ValueError):
        backoff.delay(0)


def test_a_stable_run_starts_a_new_streak() -> None:
    record = RestartRecord(RestartBackoff(initial_s=1, factor=2, cap_s=30, stable_after_s=60))
    assert [record.exited(uptime_s=0.5) for _ in range(4)] == [1, 2, 4, 8]
    assert record.exited(uptime_s=59) == 16  # not up long enough: the streak goes on
    assert record.exited(uptime_s=61) == 1  # up a minute: a fresh start
    assert record.exited(uptime_s=1) == 2


def test_free_ports_keep_the_gateway_port_asked_for() -> None:
    asked = choose_ports(free=True, gateway=8100, default_gateway=8000)
    assert asked.gateway == 8100
    assert set(asked.grpc.values()).isdisjoint(DEFAULT_GRPC_PORTS.values())
    assert choose_ports(free=True, gateway=None, default_gateway=8000).gateway != 8000
    fixed = choose_ports(free=False, gateway=None, default_gateway=8001)
    assert fixed.gateway == 8001 and fixed.grpc == DEFAULT_GRPC_PORTS
    assert choose_ports(free=False, gateway=8100, default_gateway=8001).gateway == 8100


def test_free_ports_are_distinct_and_outside_the_range_of_outgoing_connections() -> None:
    """An outgoing connection can take an ephemeral port between the pick and the child's bind."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    picked = [free_port() for _ in range(3)] + [
        port
        for ports in [Ports.free() for _ in range(5)]
        for port in [*ports.grpc.values(), *ports.metrics.values(), ports.gateway]
    ]
    assert len(set(picked)) == len(picked)
    assert all(1024 <= port < low for port in picked)


def test_the_launcher_port_is_recorded_but_not_given_to_a_service(tmp_path) -> None:
    ports = Ports.free()
    ports.write(tmp_path / "ports.json")
    assert LAUNCHER in (tmp_path / "ports.json").read_text()
    env = stack_env(ports, tmp_path)
    assert f"ZHIKU_{LAUNCHER.upper()}_METRICS_PORT" not in env
    assert env["ZHIKU_INGEST_WORKER_METRICS_PORT"] == str(ports.metrics["worker"])


def test_exits_are_described_by_signal_name() -> None:
    assert describe_exit(-9) == "-9 (SIGKILL)"
    assert describe_exit(3) == "3"


def restarts_counted(service: str) -> float:
    return REGISTRY.get_sample_value("zhiku_stack_restarts_total", {"service": service}) or 0.0


def run_until(stack: Stack, done: Callable[[], bool], timeout_s: float = 60) -> None:
    """Drive the launcher's loop (what ``main`` does) until ``done``; the timeout is a hang guard."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("the launcher did not get there")
        stack.pump(0.1)
        stack.supervise()


def http_child(ports: Ports, backoff: RestartBackoff) -> Child:
    argv = [sys.executable, "-c", HTTP_CHILD, str(ports.gateway)]
    return Child("gateway", argv, dict(os.environ), restarts=RestartRecord(backoff))


def test_a_killed_child_comes_back_on_its_port_with_backoff_and_a_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ports = Ports.free()
    child = http_child(ports, RestartBackoff(initial_s=0.2, factor=2, cap_s=10))
    stack = Stack([child], ports, color=False)
    counted = restarts_counted("gateway")
    stack.start()
    try:
        run_until(stack, lambda: stack.serving("gateway"))
        first = child.process.pid  # type: ignore[union-attr]
        os.kill(first, signal.SIGKILL)
        run_until(stack, lambda: child.restarts.total == 1 and child.exited_at is None)
        assert child.process.pid != first  # type: ignore[union-attr]
        assert httpx.get(f"http://127.0.0.1:{ports.gateway}/healthz").text == "ok"

        os.kill(child.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        run_until(stack, lambda: child.restarts.total == 2 and child.exited_at is None)
    finally:
        stack.stop(grace_s=5)
    assert child.process.poll() is not None  # type: ignore[union-attr]
    out = capsys.readouterr().out
    assert "gateway exited with -9 (SIGKILL) after" in out
    assert "up; restart 1 in 0.2 s" in out
    assert "up; restart 2 in 0.4 s" in out  # a second exit soon after: the back-off doubled
    assert "gateway restarted (restart 1, pid" in out
    assert "gateway is serving again (restart 2," in out
    assert "listening on" in out  # the restarted child's output still reaches the log
    assert restarts_counted("gateway") == counted + 2


def test_a_crash_loop_backs_off_and_stop_cancels_a_pending_restart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ports = Ports.free()
    crashing = Child(
        "worker",
        [sys.executable, "-c", "import sys; print('bad setting', flush=True); sys.exit(3)"],
        dict(os.environ),
        restarts=RestartRecord(RestartBackoff(initial_s=0.1, factor=2, cap_s=0.2)),
    )
    stack = Stack([crashing], ports, color=False)
    stack.start()
    run_until(stack, lambda: crashing.restarts.total == 3 and crashing.restart_due is not None)
    assert crashing.exited_at is not None  # never served: still counted from its first exit
    pending = crashing.process
    stack.stop(grace_s=1)
    assert crashing.restart_due is None and crashing.process is pending
    out = capsys.readouterr().out
    delays = [line.rsplit(" in ", 1)[1] for line in out.splitlines() if "exited with 3" in line]
    assert delays == ["0.1 s", "0.2 s", "0.2 s", "0.2 s"]
    assert out.count("bad setting") == 4


def test_a_dead_childs_own_children_go_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    """A helper process the child started (same process group) does not outlive it as an
    orphan holding its ports: the launcher kills the group before the restart."""
    spawner = (
        "import subprocess, sys, time\n"
        "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('helper', helper.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    child = Child(
        "ingest",
        [sys.executable, "-c", spawner],
        dict(os.environ),
        restarts=RestartRecord(RestartBackoff(initial_s=30)),
    )
    stack = Stack([child], Ports.free(), color=False)
    stack.start()
    try:
        output = ""
        while "helper" not in output:
            run_until(stack, lambda: True)
            stack.pump(0.2)
            output += capsys.readouterr().out
        helper = int(output.split("helper", 1)[1].split()[0])
        os.kill(child.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        run_until(stack, lambda: child.restart_due is not None)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{helper}") and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(helper, os.WNOHANG)  # reaped by init in real life; here it may be ours
            time.sleep(0.05)
        state = (
            Path(f"/proc/{helper}/stat").read_text().split()[2]
            if os.path.exists(f"/proc/{helper}")
            else "gone"
        )
        assert state in ("gone", "Z"), state
    finally:
        stack.stop(grace_s=1)
