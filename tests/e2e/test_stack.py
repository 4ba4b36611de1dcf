"""The walking skeleton end to end: ingest real files, search, chat through the openai SDK, delete.

The stack runs as ``make run`` runs it (separate processes, real gRPC, a real Celery worker,
the embedded Qdrant engine, the bundled models); these tests only speak public HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from launcher.stack import BackgroundStack
from tests.e2e.conftest import wait_for_jobs

pytestmark = pytest.mark.e2e

KB = "cmrc_e2e"
N_PASSAGES = 20


def cmrc_sample(evaldata: Path, n: int) -> list[tuple[str, str, str]]:
    """The first n distinct CMRC passages as (file name, passage, first question)."""
    data = json.loads((evaldata / "cmrc2018" / "cmrc2018_dev.squad.json").read_text("utf-8"))
    sample: list[tuple[str, str, str]] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            if paragraph["qas"] and len(sample) < n:
                index = len(sample)
                sample.append(
                    (f"cmrc_{index:02d}.txt", paragraph["context"], paragraph["qas"][0]["question"])
                )
    return sample


@pytest.fixture(scope="module")
def knowledge_base(client: httpx.Client, evaldata: Path) -> dict:
    """A knowledge base holding 20 CMRC passages, test.pdf and test.docx, all ingested."""
    created = client.post("/v1/knowledge_bases", json={"name": KB, "description": "CMRC sample"})
    assert created.status_code == 201, created.text
    sample = cmrc_sample(evaldata, N_PASSAGES)
    files = [("files", (name, text.encode("utf-8"), "text/plain")) for name, text, _ in sample]
    for name in ("test.pdf", "test.docx"):
        files.append(("files", (name, (evaldata / "docs" / name).read_bytes(), "application/octet-stream")))
    accepted = client.post(f"/v1/knowledge_bases/{KB}/files", files=files)
    assert accepted.status_code == 202, accepted.text
    jobs = accepted.json()["jobs"]
    assert len(jobs) == N_PASSAGES + 2
    final = wait_for_jobs(client, [job["id"] for job in jobs])
    return {"sample": sample, "jobs": final}


def test_every_job_succeeds_with_chunks(knowledge_base: dict) -> None:
    for job in knowledge_base["jobs"].values():
        assert job["state"] == "succeeded", job
        assert job["chunks"] > 0, job


def test_knowledge_base_lists_its_files_and_chunks(client: httpx.Client, knowledge_base: dict) -> None:
    listed = {kb["name"]: kb for kb in client.get("/v1/knowledge_bases").json()["data"]}
    assert listed[KB]["file_count"] == N_PASSAGES + 2
    total_chunks = sum(job["chunks"] for job in knowledge_base["jobs"].values())
    assert listed[KB]["chunk_count"] == total_chunks
    files = client.get(f"/v1/knowledge_bases/{KB}/files").json()["data"]
    assert {f["name"] for f in files} >= {"test.pdf", "test.docx", "cmrc_00.txt"}


def test_questions_find_their_passage_in_the_top_five(client: httpx.Client, knowledge_base: dict) -> None:
    hits = 0
    for file_name, _, question in knowledge_base["sample"]:
        reply = client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": question, "top_k": 5})
        assert reply.status_code == 200, reply.text
        results = reply.json()["data"]
        scores = [r["score"] for r in results]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)
        hits += any(r["file_name"] == file_name for r in results)
    assert hits >= 16, f"only {hits}/{N_PASSAGES} questions found their passage in the top 5"


def test_pdf_and_docx_text_is_searchable(client: httpx.Client, knowledge_base: dict, evaldata: Path) -> None:
    for file_name in ("test.pdf", "test.docx"):
        content = client.get(f"/v1/knowledge_bases/{KB}/files/{file_name}/content")
        assert content.status_code == 200
        assert content.content == (evaldata / "docs" / file_name).read_bytes()
    queries = {
        "test.pdf": "Large language models are becoming a crucial building block in developing agents",
        "test.docx": "AutoGen is an open-source framework for multi-agent conversation applications",
    }
    for file_name, query in queries.items():
        reply = client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": query, "top_k": 5})
        assert file_name in {r["file_name"] for r in reply.json()["data"]}, (file_name, reply.text)


def _openai(stack_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack_url}/v1", api_key="unused", timeout=300, max_retries=0)


def test_openai_sdk_chat_cites_the_right_file(stack_url: str, knowledge_base: dict) -> None:
    file_name, _, question = knowledge_base["sample"][0]
    response = _openai(stack_url).chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        extra_body={"knowledge_base": KB, "top_k": 3},
    )
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    citations = response.model_extra["citations"]
    assert citations and citations[0]["file_name"] == file_name
    assert citations[0]["url"].endswith(f"/files/{file_name}/content")


def test_openai_sdk_streaming_chat_cites_the_right_file(stack_url: str, knowledge_base: dict) -> None:
    file_name, _, question = knowledge_base["sample"][1]
    stream = _openai(stack_url).chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        stream=True,
        extra_body={"knowledge_base": KB, "top_k": 3},
    )
    chunks = list(stream)
    assert chunks, "no chunks streamed"
    citations = chunks[0].model_extra["citations"]
    assert citations and citations[0]["file_name"] == file_name
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish and finish[-1] in ("stop", "length")


def test_garbage_file_fails_clearly_and_changes_nothing(
    client: httpx.Client, knowledge_base: dict, evaldata: Path
) -> None:
    before = {kb["name"]: kb for kb in client.get("/v1/knowledge_bases").json()["data"]}[KB]
    garbage = (evaldata / "docs" / "random.bin").read_bytes()
    accepted = client.post(f"/v1/knowledge_bases/{KB}/files", files=[("files", ("random.bin", garbage))])
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["jobs"][0]["id"]
    job = wait_for_jobs(client, [job_id])[job_id]
    assert job["state"] == "failed"
    assert "random.bin" in job["error"] or "unsupported" in job["error"].lower()
    after = {kb["name"]: kb for kb in client.get("/v1/knowledge_bases").json()["data"]}[KB]
    assert after["chunk_count"] == before["chunk_count"]
    assert client.get("/healthz").status_code == 200


def test_deleting_a_file_removes_its_vectors(client: httpx.Client, knowledge_base: dict) -> None:
    file_name, passage, _ = knowledge_base["sample"][2]
    query = passage[:60]
    found = client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": query, "top_k": 5}).json()["data"]
    assert file_name in {r["file_name"] for r in found}
    assert client.delete(f"/v1/knowledge_bases/{KB}/files/{file_name}").status_code == 204
    after = client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": query, "top_k": 20}).json()["data"]
    assert file_name not in {r["file_name"] for r in after}
    assert file_name not in {f["name"] for f in client.get(f"/v1/knowledge_bases/{KB}/files").json()["data"]}
    assert client.get(f"/v1/knowledge_bases/{KB}/files/{file_name}/content").status_code == 404


def test_deleting_the_knowledge_base_removes_everything(client: httpx.Client, knowledge_base: dict) -> None:
    assert client.delete(f"/v1/knowledge_bases/{KB}").status_code == 204
    assert KB not in {kb["name"] for kb in client.get("/v1/knowledge_bases").json()["data"]}
    assert client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": "x"}).status_code == 404
    assert client.get(f"/v1/knowledge_bases/{KB}/files").status_code == 404
    recreated = client.post("/v1/knowledge_bases", json={"name": KB})
    assert recreated.status_code == 201
    assert client.get(f"/v1/knowledge_bases/{KB}/files").json()["data"] == []
    assert client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": "新闻"}).json()["data"] == []
    client.delete(f"/v1/knowledge_bases/{KB}")


def test_service_metrics_and_readiness(client: httpx.Client) -> None:
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert "zhiku_http_requests_total" in metrics


def _children(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in listed.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def test_ctrl_c_stops_every_process(stack: BackgroundStack) -> None:
    """Runs last: SIGINT to the launcher (what Ctrl-C sends) leaves no service process behind."""
    children = _children(stack.process.pid)
    assert len(children) == 6, children
    stack.process.send_signal(signal.SIGINT)
    stack.process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)]
    assert "stopping" in stack.log_path.read_text(errors="replace")
