"""Start the whole stack exactly as ``make run`` does (``python -m launcher``), on free ports."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from launcher.stack import BackgroundStack, launch_in_background

REPO = Path(__file__).resolve().parents[2]
EVALDATA = Path(os.environ.get("ZHIKU_EVALDATA", REPO.parent / "shared" / "evaldata"))
OUTPUT = REPO / "test-output" / "e2e"


@pytest.fixture(scope="session")
def evaldata() -> Path:
    if not EVALDATA.is_dir():
        pytest.fail(f"evaluation data not found at {EVALDATA} (set ZHIKU_EVALDATA)")
    return EVALDATA


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    try:
        running = launch_in_background(tmp_path_factory.mktemp("zhiku-data"), OUTPUT / "stack.log")
    except RuntimeError as error:
        pytest.fail(str(error))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def stack_url(stack: BackgroundStack) -> str:
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
