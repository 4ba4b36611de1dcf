"""``kill -9`` each process of a running stack in turn, under traffic and ingestion.

The stack is ``make run``'s launcher (``launch_in_background``) on its own data directory, so
these kills never disturb the other e2e tests' stack; with the fast models of the ops and CLI
tests, since what is tested is the processes, not the answers. For each process the test
checks what a client sees while it is down (503 naming the service while the other routes
keep serving; for the gateway itself, connection refused), that the launcher restarts it
with nobody's help, and how soon after the launcher's "restarted" line clients are served.
Files whose ingestion was in flight when the worker died finish with exactly the chunks a
clean ingestion of the same files gives, each stored once in the vector store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

from launcher.stack import PORTS_FILE, BackgroundStack, launch_in_background
from tests.e2e.conftest import OUTPUT, wait_for_jobs
from zhiku.v1 import retrieve_pb2, retrieve_pb2_grpc

pytestmark = pytest.mark.e2e

FAST_STACK_ENV = {"ZHIKU_EMBED_LOCAL_MODEL": "use", "ZHIKU_GENERATE_BACKEND": "extractive"}
KB = "supervised"
REFERENCE_KB = "supervised_reference"
N_FILES = 4
PASSAGES_PER_FILE = 6
# Clients are served again this soon after the launcher's "restarted" line (the figure).
SERVING_AFTER_RESTART_S = 10
# Each child of the launcher, found by its command line.
COMMANDS = {
    "worker": "services.ingest.worker.celery_app",
    "retrieve": "services.retrieve.server",
    "embed": "services.embed.server",
    "generate": "services.generate.server",
    "ingest": "services.ingest.api.server",
    "gateway": "services.gateway.server",
}


@dataclass
class LauncherLog:
    """The launcher's own lines, each with the moment this test first saw it: a thread reads
    the log every 50 ms, so the times do not depend on how long the probes take."""

    path: Path
    lines: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        offset, partial = 0, b""
        while not self._stop.wait(0.05):
            with self.path.open("rb") as log:
                log.seek(offset)
                data = log.read()
            offset += len(data)
            *complete, partial = (partial + data).split(b"\n")
            now = time.monotonic()
            for line in complete:
                text = line.decode("utf-8", "replace")
                if text.lstrip().startswith("zhiku |"):
                    self.lines.append((now, text.split("|", 1)[1].strip()))

    def seen(self, text: str, since: int) -> float | None:
        """When the first line containing ``text`` after line number ``since`` appeared."""
        return next((at for at, line in self.lines[since:] if text in line), None)

    def close(self) -> None:
        self._stop.set()


@dataclass
class Supervised:
    stack: BackgroundStack
    data_dir: Path
    log: LauncherLog

    @property
    def ports(self) -> dict:
        return json.loads((self.data_dir / PORTS_FILE).read_text(encoding="utf-8"))

    def pid_of(self, name: str) -> int:
        listed = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.stack.process.pid)], capture_output=True, text=True
        )
        for pid in (int(line) for line in listed.stdout.split()):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except FileNotFoundError:
                continue
            if COMMANDS[name] in command:
                return pid
        raise AssertionError(f"no {name} process under the launcher")


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    data_dir = tmp_path_factory.mktemp("zhiku-supervised")
    try:
        stack = launch_in_background(data_dir, OUTPUT / "supervision-stack.log", FAST_STACK_ENV)
    except RuntimeError as error:
        pytest.fail(str(error))
    log = LauncherLog(stack.log_path)
    yield Supervised(stack, data_dir, log)
    log.close()
    stack.stop()


def cmrc_files(evaldata: Path) -> list[tuple[str, bytes]]:
    """N_FILES text files of PASSAGES_PER_FILE CMRC passages each: long enough to be in flight."""
    data = json.loads((evaldata / "cmrc2018" / "cmrc2018_dev.squad.json").read_text("utf-8"))
    passages = [p["context"] for article in data["data"] for p in article["paragraphs"]]
    return [
        (
            f"part_{index:02d}.txt",
            "\n\n".join(passages[index * PASSAGES_PER_FILE : (index + 1) * PASSAGES_PER_FILE]).encode(),
        )
        for index in range(N_FILES)
    ]


def upload(client: httpx.Client, kb: str, files: list[tuple[str, bytes]]) -> list[str]:
    sent = [("files", (name, data, "text/plain")) for name, data in files]
    accepted = client.post(f"/v1/knowledge_bases/{kb}/files", files=sent)
    assert accepted.status_code == 202, accepted.text
    return [job["id"] for job in accepted.json()["jobs"]]


def points(ports: dict, collection: str) -> int:
    """What the vector store really holds (the catalog's counts cannot see duplicates)."""
    with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']['retrieve']}") as channel:
        stub = retrieve_pb2_grpc.RetrieveServiceStub(channel)
        return stub.Stats(retrieve_pb2.StatsRequest(collection=collection), timeout=30).points


def call(request: Callable[[], httpx.Response]) -> httpx.Response | None:
    """The response, or None when nothing listens (connection refused)."""
    try:
        return request()
    except httpx.TransportError:
        return None


def ok(reply: httpx.Response | None) -> bool:
    return reply is not None and reply.status_code == 200


def tail(supervised: Supervised) -> str:
    return supervised.stack.log_path.read_text(errors="replace")[-3000:]


@dataclass
class Outage:
    """One kill, as a client and the launcher's log saw it."""

    service: str
    down_statuses: set[str]  # what the probe got between the kill and the restart
    down_message: str
    restarted_after_s: float  # kill -> the launcher's "restarted" line
    serving_after_restart_s: float  # that line -> the probe served again


def kill_and_watch(
    supervised: Supervised,
    name: str,
    probe: Callable[[], httpx.Response],
    unaffected: Callable[[], httpx.Response] | None,
    served: Callable[[httpx.Response | None], bool] = ok,
    after_kill: Callable[[], None] | None = None,
) -> Outage:
    """SIGKILL one process, then probe what needs it (and what does not, which must keep
    serving) until the launcher has restarted it and the probe is served again."""
    since = len(supervised.log.lines)
    victim = supervised.pid_of(name)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    if after_kill is not None:
        after_kill()
    statuses: set[str] = set()
    message = ""
    deadline = killed_at + 180  # a hang guard, far above any restart
    while time.monotonic() < deadline:
        if supervised.stack.process.poll() is not None:
            pytest.fail(f"the launcher exited after {name} was killed:\n{tail(supervised)}")
        restarted_at = supervised.log.seen(f"{name} restarted (restart ", since)
        reply = call(probe)
        if restarted_at is not None and served(reply):
            break
        if restarted_at is None:
            statuses.add("refused" if reply is None else str(reply.status_code))
            if reply is not None and reply.status_code == 503 and not message:
                message = reply.json()["error"]["message"]
            if unaffected is not None:
                other = call(unaffected)
                assert ok(other), (name, other and other.text)
        time.sleep(0.2)
    else:
        pytest.fail(f"{name}: not serving 180 s after the kill:\n{tail(supervised)}")
    served_at = time.monotonic()
    assert supervised.pid_of(name) != victim
    return Outage(name, statuses, message, restarted_at - killed_at, served_at - restarted_at)


def test_every_process_killed_in_turn_comes_back_and_ingestion_finishes_exactly(
    supervised: Supervised, evaldata: Path
) -> None:
    files = cmrc_files(evaldata)
    with httpx.Client(base_url=supervised.stack.url, timeout=60) as client:

        def search() -> httpx.Response:
            return client.post(f"/v1/knowledge_bases/{KB}/search", json={"query": "历史", "top_k": 3})

        def chat() -> httpx.Response:
            question = [{"role": "user", "content": "Say hello."}]
            return client.post("/v1/chat/completions", json={"model": "default", "messages": question})

        def list_kbs() -> httpx.Response:
            return client.get("/v1/knowledge_bases")

        def embed() -> httpx.Response:
            return client.post("/v1/embeddings", json={"model": "default", "input": ["你好"]})

        for kb in (KB, REFERENCE_KB):
            assert client.post("/v1/knowledge_bases", json={"name": kb}).status_code == 201
        job_ids = upload(client, KB, files)
        states: list[str] = []
        deadline = time.monotonic() + 120
        while "running" not in states and time.monotonic() < deadline:
            states = [client.get(f"/v1/jobs/{job_id}").json()["state"] for job_id in job_ids]
            time.sleep(0.05)
        assert "running" in states, f"no job running to kill the worker under: {states}"

        # Sent once the worker is dead: its job done is what "the worker serves again" means.
        late: list[str] = []

        def send_late_file() -> None:
            late.extend(upload(client, KB, [("late.txt", "迟到的文件。".encode())]))

        def late_job_done(reply: httpx.Response | None) -> bool:
            return ok(reply) and reply.json()["state"] == "succeeded"  # type: ignore[union-attr]

        outages = [
            kill_and_watch(
                supervised,
                "worker",
                lambda: client.get(f"/v1/jobs/{late[0]}"),
                search,  # nothing asks the worker directly: searches keep working
                served=late_job_done,
                after_kill=send_late_file,
            )
        ]
        # Each of the other kills has its own batch of the same files in flight: sent just
        # after the kill for the worker's dependencies (retrieve, embed: the batch meets the
        # outage and retries), just before it for the rest. Each batch finishes before the
        # next kill, so no job meets two outages (its attempts are bounded: max_attempts).
        batches: dict[str, list[str]] = {}
        for name, probe, unaffected, during in [
            ("retrieve", search, list_kbs, True),
            ("embed", embed, list_kbs, True),
            ("generate", chat, search, False),
            ("ingest", list_kbs, embed, False),
            ("gateway", list_kbs, None, False),
        ]:
            named = [(f"{name}_{file_name}", data) for file_name, data in files]

            def send_batch(name: str = name, named: list[tuple[str, bytes]] = named) -> None:
                batches[name] = upload(client, KB, named)

            if not during:
                send_batch()
            outages.append(
                kill_and_watch(supervised, name, probe, unaffected, after_kill=send_batch if during else None)
            )
            wait_for_jobs(client, batches[name], timeout_s=300)

        final = wait_for_jobs(client, job_ids, timeout_s=300)
        batch_jobs = wait_for_jobs(client, [job for ids in batches.values() for job in ids], timeout_s=300)
        reference = wait_for_jobs(client, upload(client, REFERENCE_KB, files), timeout_s=300)
        late_chunks = client.get(f"/v1/jobs/{late[0]}").json()["chunks"]
        kbs = {kb["name"]: kb for kb in client.get("/v1/knowledge_bases").json()["data"]}

    report = ["process   down-statuses  kill->restarted  restarted->served  message"]
    for outage in outages:
        report.append(
            f"{outage.service:9} {','.join(sorted(outage.down_statuses)):14} "
            f"{outage.restarted_after_s:14.1f}s {outage.serving_after_restart_s:17.1f}s  "
            f"{outage.down_message[:50]}"
        )
    attempts = {name: [batch_jobs[job_id]["attempts"] for job_id in ids] for name, ids in batches.items()}
    report.append(f"attempts of each batch's jobs: {attempts}")
    print("\n" + "\n".join(report))
    (OUTPUT / "supervision-outages.txt").write_text("\n".join(report) + "\n", encoding="utf-8")

    by_service = {outage.service: outage for outage in outages}
    for name in ("retrieve", "embed", "generate", "ingest"):
        outage = by_service[name]
        assert outage.down_statuses == {"503"}, outage
        assert outage.down_message.startswith(f"the {name} service is unavailable: "), outage
    assert by_service["gateway"].down_statuses == {"refused"}
    for outage in outages:
        assert outage.serving_after_restart_s <= SERVING_AFTER_RESTART_S, outage
    metrics = httpx.get(f"http://127.0.0.1:{supervised.ports['metrics']['stack']}/metrics").text
    for name in COMMANDS:
        assert f'zhiku_stack_restarts_total{{service="{name}"}} 1.0' in metrics, name

    # The jobs the worker was running when it died ran again (attempt 2) and finished exactly;
    # so did every batch in flight during another kill: the same chunks as a clean ingestion.
    assert all(job["state"] == "succeeded" for job in [*final.values(), *reference.values()])
    assert any(job["attempts"] == 2 for job in final.values()), final
    expected = {job["file_name"]: job["chunks"] for job in reference.values()}
    assert {job["file_name"]: job["chunks"] for job in final.values()} == expected
    for name, ids in batches.items():
        jobs = [batch_jobs[job_id] for job_id in ids]
        assert all(job["state"] == "succeeded" for job in jobs), jobs
        chunks = {job["file_name"].removeprefix(f"{name}_"): job["chunks"] for job in jobs}
        assert chunks == expected, (name, jobs)
    total = sum(expected.values())
    copies = 1 + len(batches)
    assert kbs[REFERENCE_KB]["file_count"] == N_FILES and kbs[KB]["file_count"] == copies * N_FILES + 1
    assert kbs[REFERENCE_KB]["chunk_count"] == total
    assert kbs[KB]["chunk_count"] == copies * total + late_chunks
    assert points(supervised.ports, REFERENCE_KB) == total
    assert points(supervised.ports, KB) == copies * total + late_chunks
