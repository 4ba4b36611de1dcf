"""A real stack scraped by a real Prometheus, with some ingest, search and chat traffic driven.

The stack is ``launcher.stack`` on free ports (the same launcher as ``make run``); the ports
it chose come from ``<data dir>/stack-ports.json``. Prometheus is Debian's package, installed
by ``scripts/ensure-prometheus.sh`` when missing, run on a free port with a generated config
that scrapes every process each second and loads ``deploy/prometheus/rules.yml``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from launcher.stack import PORTS_FILE, BackgroundStack, free_port, launch_in_background

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "ops"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
SCRAPE_INTERVAL_S = 1
# Fast, model-light choices: the point is the metrics, not answer quality.
STACK_ENV = {"ZHIKU_GENERATE_BACKEND": "extractive", "ZHIKU_EMBED_LOCAL_MODEL": "use"}
KB = "ops_metrics"
DOCS = {
    "leave.txt": "年假申请需要提前三天在系统中提交，经主管批准后生效。Annual leave needs three days notice.",
    "expenses.txt": "差旅报销须在出差结束后三十天内提交发票。Travel expenses are claimed within thirty days.",
    "security.md": "# Security\n\nRotate API keys every ninety days. 访问密钥每九十天轮换一次。",
}


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str) -> dict:
        """Evaluate an instant query now; the decoded API reply, whether it succeeded or not."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        return reply.json()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        subprocess.run(["bash", str(REPO / "scripts" / "ensure-prometheus.sh")], check=True)
        path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed and scripts/ensure-prometheus.sh could not install it")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundStack, dict]]:
    data_dir = tmp_path_factory.mktemp("zhiku-ops-data")
    try:
        running = launch_in_background(data_dir, OUTPUT / "stack.log", STACK_ENV)
    except RuntimeError as error:
        pytest.fail(str(error))
    ports = json.loads((data_dir / PORTS_FILE).read_text(encoding="utf-8"))
    yield running, ports
    running.stop()


def scrape_config(ports: dict) -> dict:
    """One job per process: the gateway's /metrics on its HTTP port, the others' metrics ports."""
    jobs = [{"job_name": "zhiku-gateway", "static_configs": [{"targets": [f"127.0.0.1:{ports['gateway']}"]}]}]
    for name, port in sorted(ports["metrics"].items()):
        jobs.append({"job_name": f"zhiku-{name}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]})
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": jobs,
    }


@pytest.fixture(scope="session")
def prometheus(
    stack: tuple[BackgroundStack, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = _tool("prometheus")
    _, ports = stack
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(ports)), encoding="utf-8")
    port = free_port()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with (OUTPUT / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        _wait(lambda: _ready(server), 60, "Prometheus did not become ready")
        expected = {job["job_name"] for job in scrape_config(ports)["scrape_configs"]}
        _wait(lambda: _healthy_jobs(server) >= expected, 60, f"not every target is up: {expected}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(server: Prometheus) -> bool:
    try:
        return httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _healthy_jobs(server: Prometheus) -> set[str]:
    targets = httpx.get(f"{server.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return {t["labels"]["job"] for t in targets if t["health"] == "up"}


def _wait(check: object, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    pytest.fail(message)


def _wait_jobs(client: httpx.Client, job_ids: list[str], timeout_s: float = 300) -> None:
    pending = set(job_ids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] not in ("queued", "running"):
                assert job["state"] == "succeeded", job
                pending.discard(job_id)
        time.sleep(0.5)
    assert not pending, f"ingest jobs did not finish: {pending}"


@pytest.fixture(scope="session")
def traffic(stack: tuple[BackgroundStack, dict], prometheus: Prometheus) -> Prometheus:
    """Ingest, search, chat (plain and streamed), a miss and a delete, then let Prometheus scrape."""
    running, _ = stack
    with httpx.Client(base_url=running.url, timeout=120) as client:
        assert client.post("/v1/knowledge_bases", json={"name": KB}).status_code == 201
        # One upload at a time, a few scrapes apart: each histogram and counter then moves
        # between two scrapes, so rates (and quantiles of rates) are real numbers, not NaN.
        for name, text in DOCS.items():
            upload = [("files", (name, text.encode("utf-8")))]
            accepted = client.post(f"/v1/knowledge_bases/{KB}/files", files=upload)
            assert accepted.status_code == 202, accepted.text
            _wait_jobs(client, [job["id"] for job in accepted.json()["jobs"]])
            time.sleep(2 * SCRAPE_INTERVAL_S)
        for query in ("年假怎么申请？", "How soon are travel expenses claimed?", "API key rotation"):
            reply = client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": query, "top_k": 3})
            assert reply.status_code == 200, reply.text
            messages = [{"role": "user", "content": query}]
            chat = {"model": "default", "messages": messages, "knowledge_base": KB}
            assert client.post("/v1/chat/completions", json=chat).status_code == 200
            with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as streamed:
                assert streamed.status_code == 200
                streamed.read()
            time.sleep(2 * SCRAPE_INTERVAL_S)
        assert client.get("/v1/knowledge_bases/no_such_kb/files").status_code == 404
        assert client.delete(f"/v1/knowledge_bases/{KB}/files/security.md").status_code in (200, 204)
    # Enough scrapes after the last request that every counter has moved inside a rate window.
    time.sleep(5 * SCRAPE_INTERVAL_S)
    return prometheus
