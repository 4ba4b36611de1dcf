"""Start the whole stack exactly as ``make run`` does (``python -m services.stack``), on free ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
EVALDATA = Path(os.environ.get("ZHIKU_EVALDATA", REPO.parent / "shared" / "evaldata"))
OUTPUT = REPO / "test-output" / "e2e"
READY = re.compile(r"ready: (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="session")
def evaldata() -> Path:
    if not EVALDATA.is_dir():
        pytest.fail(f"evaluation data not found at {EVALDATA} (set ZHIKU_EVALDATA)")
    return EVALDATA


@dataclass
class RunningStack:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log_path = OUTPUT / "stack.log"
    data_dir = tmp_path_factory.mktemp("zhiku-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIKU_")}
    env["ZHIKU_LOG_JSON"] = "true"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.stack", "--free-ports", "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = None
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and process.poll() is None:
        match = READY.search(log_path.read_text(errors="replace"))
        if match:
            url = match.group(1)
            break
        time.sleep(0.5)
    if url is None:
        os.killpg(process.pid, signal.SIGKILL)
        tail = log_path.read_text(errors="replace")[-4000:]
        pytest.fail(f"stack did not become ready (exit {process.poll()}):\n{tail}")
    yield RunningStack(url, process, log_path)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def stack_url(stack: RunningStack) -> str:
    return stack.url


@pytest.fixture(scope="session")
def client(stack_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack_url, timeout=120) as http:
        yield http


def wait_for_jobs(client: httpx.Client, job_ids: list[str], timeout_s: float = 600) -> dict[str, dict]:
    """Poll every job until it leaves queued/running; return the final job documents by id."""
    final: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(final) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in final:
                continue
            job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
            if job["state"] not in ("queued", "running"):
                final[job_id] = job
        time.sleep(0.5)
    missing = [j for j in job_ids if j not in final]
    assert not missing, f"jobs still running after {timeout_s}s: {missing}"
    return final
