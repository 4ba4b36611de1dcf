"""Jobs under API keys: a key limited to some knowledge bases can neither read, follow nor
cancel the jobs of the others, and cannot tell them from ids that do not exist."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = {"Authorization": "Bearer root-key"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("jobs-access"), api_keys=["root-key"]) as running:
        yield running


async def test_a_limited_key_sees_only_its_knowledge_bases_jobs(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, headers=ROOT) as root:
        mine, theirs = f"mine-{uuid.uuid4().hex[:6]}", f"theirs-{uuid.uuid4().hex[:6]}"
        jobs = {}
        for kb in (mine, theirs):
            assert (await root.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
            upload = await root.post(
                f"/v1/knowledge_bases/{kb}/files", files=[("files", ("a.txt", "第一段。".encode()))]
            )
            assert upload.status_code == 202, upload.text
            jobs[kb] = upload.json()["jobs"][0]["id"]
        created = await root.post("/v1/keys", json={"name": "bot", "knowledge_bases": [mine]})
        assert created.status_code == 201, created.text
        limited = {"Authorization": f"Bearer {created.json()['key']}"}

        assert (await root.get(f"/v1/jobs/{jobs[theirs]}")).status_code == 200  # unlimited key
        assert (await root.get(f"/v1/jobs/{jobs[mine]}", headers=limited)).status_code == 200
        unknown = str(uuid.uuid4())
        for method, suffix in [("GET", ""), ("GET", "/events"), ("POST", "/cancel")]:
            other = await root.request(method, f"/v1/jobs/{jobs[theirs]}{suffix}", headers=limited)
            missing = await root.request(method, f"/v1/jobs/{unknown}{suffix}", headers=limited)
            assert other.status_code == missing.status_code == 404, (suffix, other.text)
            assert other.json() == {
                "error": {**missing.json()["error"], "message": f"job {jobs[theirs]!r} does not exist"}
            }
        # The refused cancel changed nothing: the job still runs to its end.
        state = (await root.get(f"/v1/jobs/{jobs[theirs]}")).json()["state"]
        assert state != "cancelled"
