"""``zhiku up`` through the installed console script: the stack starts, answers, and Ctrl-C
(SIGINT) stops every process it started. Also the one run of the real ``zhiku`` entry point."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.stack import free_port
from services.cli.tests.conftest import FAST_STACK_ENV, OUTPUT

ZHIKU = Path(sys.executable).parent / "zhiku"
READY = re.compile(r"ready: (http://127\.0\.0\.1:\d+)")


def _children(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in listed.stdout.split()]


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _wait_ready(log: Path, process: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        match = READY.search(log.read_text(errors="replace"))
        if match:
            return match.group(1)
        time.sleep(0.5)
    pytest.fail(f"zhiku up did not become ready (exit {process.poll()}):\n{log.read_text()[-3000:]}")


def test_zhiku_up_serves_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    assert ZHIKU.exists() or shutil.which("zhiku"), "console script missing: pip install -e ."
    script = str(ZHIKU) if ZHIKU.exists() else "zhiku"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIKU_")} | FAST_STACK_ENV
    log = OUTPUT / "zhiku-up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()  # --free-ports picks the others; the gateway stays where it is asked to be
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [script, "up", "--free-ports", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = _wait_ready(log, process, 300)
        assert url == f"http://127.0.0.1:{port}"
        children = _children(process.pid)
        assert len(children) == 6, children  # four services, the worker, the gateway

        created = subprocess.run(
            [script, "kb", "create", "from_script"],
            env={**env, "ZHIKU_URL": url},
            capture_output=True,
            text=True,
        )
        assert created.returncode == 0, created.stderr
        listed = subprocess.run(
            [script, "--url", url, "kb", "list"],
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
        )
        assert listed.returncode == 0 and "from_script" in listed.stdout, listed.stderr

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)]
        assert "stopping" in log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
