"""Sources over the public API, on the whole stack (real services, real Celery worker): a
directory source synced on demand with its report and chunk counts, a path outside the
sources root refused, S3 keys accepted but never returned, and the same per-key
knowledge-base authorization as the files routes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = {"Authorization": "Bearer root-key"}
SECRET = "gateway-s3-secret-must-never-come-back"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Path]]:
    data_dir = tmp_path_factory.mktemp("sources-api")
    root = data_dir / "mounted"
    root.mkdir()
    ingest = {"sources_root": root, "sources_key": Fernet.generate_key().decode()}
    async with running_stack(data_dir, ingest=ingest, api_keys=["root-key"]) as running:
        yield running, root


async def _finished(client: httpx.AsyncClient, kb: str, name: str, sync_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report = (await client.get(f"/v1/knowledge_bases/{kb}/sources/{name}/syncs/{sync_id}")).json()
        if report["state"] in ("succeeded", "failed"):
            for job_id in report["job_ids"]:
                while (await client.get(f"/v1/jobs/{job_id}")).json()["state"] not in ("succeeded", "failed"):
                    await asyncio.sleep(0.2)
            return report
        await asyncio.sleep(0.2)
    raise AssertionError("sync did not finish")


async def test_directory_source_over_http(stack: tuple[Stack, Path]) -> None:
    running, root = stack
    (root / "manuals" / "pumps").mkdir(parents=True)
    (root / "manuals" / "valves.md").write_text("Valves are checked every spring before the season starts.")
    (root / "manuals" / "pumps" / "p1.txt").write_text("Pump one is primed by hand and runs at low speed.")
    kb = f"src-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=running.url, timeout=60, headers=ROOT) as client:
        assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
        base = f"/v1/knowledge_bases/{kb}/sources"
        created = await client.post(base, json={"name": "manuals", "kind": "directory", "path": "manuals"})
        assert created.status_code == 201, created.text
        for path in ("../..", "/etc", "manuals/../../.."):
            refused = await client.post(base, json={"name": "bad", "kind": "directory", "path": path})
            assert refused.status_code == 422, refused.text
            assert "sources root" in refused.json()["error"]["message"]
        duplicate = await client.post(base, json={"name": "manuals", "kind": "directory", "path": "manuals"})
        assert duplicate.status_code == 409

        queued = await client.post(f"{base}/manuals/sync")
        assert queued.status_code == 202 and queued.json()["state"] == "queued"
        report = await _finished(client, kb, "manuals", queued.json()["id"])
        assert report["state"] == "succeeded" and sorted(report["added"]) == ["pumps__p1.txt", "valves.md"]
        files = (await client.get(f"/v1/knowledge_bases/{kb}/files")).json()["data"]
        assert {f["name"]: f["chunks"] for f in files} == {"pumps__p1.txt": 1, "valves.md": 1}

        (root / "manuals" / "valves.md").unlink()
        queued = await client.post(f"{base}/manuals/sync")
        report = await _finished(client, kb, "manuals", "latest")
        assert report["removed"] == ["valves.md"] and report["id"] == queued.json()["id"]
        files = (await client.get(f"/v1/knowledge_bases/{kb}/files")).json()["data"]
        assert {f["name"]: f["chunks"] for f in files} == {"pumps__p1.txt": 1}

        listed = (await client.get(base)).json()["data"]
        assert [(s["name"], s["last_sync"]["removed"]) for s in listed] == [("manuals", ["valves.md"])]
        assert (await client.delete(f"{base}/manuals")).status_code == 204
        assert (await client.get(base)).json()["data"] == []
        assert (await client.post(f"{base}/manuals/sync")).status_code == 404
        files = (await client.get(f"/v1/knowledge_bases/{kb}/files")).json()["data"]
        assert [f["name"] for f in files] == ["pumps__p1.txt"]  # a deleted source's files stay


async def test_s3_keys_are_write_only_and_sources_follow_key_scopes(stack: tuple[Stack, Path]) -> None:
    running, _ = stack
    mine, theirs = f"mine-{uuid.uuid4().hex[:6]}", f"theirs-{uuid.uuid4().hex[:6]}"
    body = {
        "name": "bucket",
        "kind": "s3",
        "bucket": "reports",
        "prefix": "2026/",
        "endpoint_url": "http://127.0.0.1:9",
        "access_key_id": "AKIAGATEWAYTEST",
        "secret_access_key": SECRET,
    }
    async with httpx.AsyncClient(base_url=running.url, timeout=60, headers=ROOT) as client:
        for kb in (mine, theirs):
            assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
            created = await client.post(f"/v1/knowledge_bases/{kb}/sources", json=body)
            assert created.status_code == 201, created.text
            assert created.json()["credentials_set"] is True
            assert SECRET not in created.text and "AKIAGATEWAYTEST" not in created.text
        listing = await client.get(f"/v1/knowledge_bases/{mine}/sources")
        assert SECRET not in listing.text and "AKIAGATEWAYTEST" not in listing.text
        assert listing.json()["data"][0]["credentials_set"] is True

        # Nothing listens on the endpoint: the sync fails with its reason, nothing is indexed.
        queued = await client.post(f"/v1/knowledge_bases/{mine}/sources/bucket/sync")
        report = await _finished(client, mine, "bucket", queued.json()["id"])
        assert report["state"] == "failed" and "cannot list s3://reports/2026/" in report["error"]
        assert SECRET not in str(report)
        assert (await client.get(f"/v1/knowledge_bases/{mine}/files")).json()["data"] == []

        key = (await client.post("/v1/keys", json={"name": "bot", "knowledge_bases": [mine]})).json()["key"]
        limited = {"Authorization": f"Bearer {key}"}
        assert (await client.get(f"/v1/knowledge_bases/{mine}/sources", headers=limited)).status_code == 200
        for method, suffix in [("GET", ""), ("POST", "/bucket/sync"), ("DELETE", "/bucket")]:
            hidden = await client.request(
                method, f"/v1/knowledge_bases/{theirs}/sources{suffix}", headers=limited
            )
            assert hidden.status_code == 404, (method, suffix, hidden.text)
        assert len((await client.get(f"/v1/knowledge_bases/{theirs}/sources")).json()["data"]) == 1
