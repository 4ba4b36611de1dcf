"""Schemathesis against the gateway's own OpenAPI schema: generated requests to every
operation must never get a server error (5xx) nor a response that contradicts the schema.

The whole stack (real services, Celery worker, uvicorn) runs in a background thread with its
own event loop, because schemathesis calls the API synchronously. The run is bounded and
reproducible: few examples per operation, hypothesis derandomized (a fixed seed).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from .stack import running_stack

MAX_EXAMPLES = 4
# Keys are configured, so the access layer is part of what is fuzzed; requests carry the admin
# key (keys created by generated requests only limit themselves, never this one).
ADMIN_KEY = "fuzz-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stack served from a thread's event loop; stopped when the module is done."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    ready: list[str] = []
    started = threading.Event()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with running_stack(data_dir, api_keys=[ADMIN_KEY]) as stack:
                ready.append(stack.url)
                started.set()
                await stop.wait()
        except BaseException as error:
            failure.append(error)
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    started.wait(120)
    if failure or not ready:
        raise RuntimeError("the stack did not start") from (failure[0] if failure else None)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)  # type: ignore[union-attr]
        thread.join(60)
        loop.close()


CHECKS = [not_a_server_error, response_schema_conformance]


def _fuzz(case_strategy: SearchStrategy[schemathesis.Case], base_url: str, failures: list[str]) -> None:
    @given(case=case_strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=120, headers=AUTH)
        except Exception as error:  # every failure is collected, reported at once
            failures.append(f"{case.method} {case.formatted_path}: {error}")

    run()


def test_no_server_errors_nor_schema_violations(live_url: str) -> None:
    """Every operation, a few generated requests each; all failures are listed together."""
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # an Err fails here
    assert len(operations) > 30
    paths = {operation.path for operation in operations}
    assert {"/v1/conversations", "/v1/keys", "/v1/file_chats", "/chat/file_chat"} <= paths
    for operation in operations:
        _fuzz(operation.as_strategy(), live_url, failures)
    assert not failures, "\n\n".join(failures)
