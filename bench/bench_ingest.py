"""Ingestion throughput: Zhiku's whole pipeline next to raw embedding and a Chatchat-style build.

Every CMRC 2018 dev passage (848) becomes one ``.txt`` file. In one run, per embedding model:

* **zhiku**: the stack as ``make run`` starts it (gateway, ingest API, Celery worker, embed,
  retrieve as separate processes); the files are uploaded through ``POST .../files`` and the
  clock stops when every job has succeeded (parse, split, embed, index: chunks searchable).
* **raw embed**: the same embedding backend, in process, on exactly the chunks Zhiku indexed,
  in one call (sorted by length, the backend's own batches): the ceiling for any pipeline.
* **langchain**: Chatchat's recipe, file by file as its ``KBService`` adds documents:
  langchain-community ``TextLoader``, ``RecursiveCharacterTextSplitter`` (250/50) and a FAISS
  store (``add_documents`` per file) over the same embedding backend.

And with ``instant``, an embedder that costs nothing (testing/instant_tei.py: a TEI-protocol
server answering at once with deterministic vectors, the embed service on its ``tei`` backend
as in production): the pipeline's own ceiling in chunks/s, compared with the ceiling measured
before this pipeline's rework (``--instant-before``).

For every stack run it prints the CPU milliseconds each process spent per file (from
/proc/<pid>/stat, read right before the first upload and after the last job succeeded).
Each model runs ``--repeat`` alternated passes (e5 ``--e5-repeat``); the median pass is reported,
with every pass's ratio beside it. Prints chunks/s and files/s and the targets' ratios; never
passes or fails on time.

    python -m bench.bench_ingest [--models use instant e5] [--passages 848] [--e5-passages 120]
                                 [--repeat 3] [--e5-repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from launcher.stack import free_port, launch_in_background
from services.embed.backends.local import LocalBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind
from services.ingest.documents.parsers import parse
from services.ingest.documents.splitter import split_segments

REPO = Path(__file__).resolve().parents[1]
EVALDATA = Path(os.environ.get("ZHIKU_EVALDATA", REPO.parent / "shared" / "evaldata"))
CHUNK_SIZE, CHUNK_OVERLAP = 250, 50
UPLOAD_BATCH = 25  # files per multipart request
UPLOAD_CONCURRENCY = 4  # upload requests at once
INSTANT = "instant"  # the embedder that costs nothing (testing/instant_tei.py)
# The ceiling with the instant embedder before the batched pipeline, chunks/s: this bench on
# 6563540 (main 82df42e with document access merged), 848 files, 2 idle cores, 2026-12-04.
INSTANT_BEFORE = 146.9
# The order processes are printed in (what is not running is left out).
PROCESSES = ("gateway", "ingest", "worker", "embed", "retrieve", "generate", "tei")


@dataclass
class Figure:
    files: int
    chunks: int
    seconds: float

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds


def passages(limit: int) -> list[tuple[str, str]]:
    data = json.loads((EVALDATA / "cmrc2018" / "cmrc2018_dev.squad.json").read_text("utf-8"))
    out = [
        (f"p{n:04d}.txt", paragraph["context"])
        for n, paragraph in enumerate(p for article in data["data"] for p in article["paragraphs"])
    ]
    return out[:limit]


def zhiku_chunks(files: list[tuple[str, str]]) -> list[str]:
    """The chunks the ingest worker makes of these files (same parser, splitter and settings)."""
    return [
        chunk.text
        for name, text in files
        for chunk in split_segments(parse(name, text.encode()), name, CHUNK_SIZE, CHUNK_OVERLAP)
    ]


def poll_pause(done: int, expected: int, elapsed_s: float) -> float:
    """Seconds until the next poll of the chunk count: a third of the time the remaining
    chunks should take at the pace so far, between 0.05 and 1 s. Polling every 0.1 s cost the
    stack about 3 ms of CPU a poll (gateway and ingest API), 1-2% of a run; this way a run
    takes a dozen or two polls and the end is still seen within 0.05 s."""
    if done <= 0:
        return 0.25
    remaining_s = (expected - done) * elapsed_s / done
    return min(1.0, max(0.05, remaining_s / 3))


def cpu_ms_per_file(before: dict[str, float], after: dict[str, float], files: int) -> dict[str, float]:
    """CPU milliseconds each process spent per file between two readings."""
    return {name: (after[name] - before.get(name, 0.0)) * 1000 / files for name in after}


def format_cpu(per_file: dict[str, float]) -> str:
    ordered = [name for name in PROCESSES if name in per_file] + sorted(set(per_file) - set(PROCESSES))
    total = sum(per_file.values())
    return ", ".join(f"{name} {per_file[name]:.1f}" for name in ordered) + f"; total {total:.1f} ms/file"


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of one process (threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_process(root: int) -> dict[str, float]:
    """User+system CPU seconds of each process of the stack (the launcher's descendants), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, float, list[str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        words = [part.decode(errors="replace") for part in argv if part]
        procs[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, words)
    used: dict[str, float] = {}
    for pid, (_, seconds, words) in procs.items():
        ancestor = pid
        while ancestor in procs and ancestor != root:
            ancestor = procs[ancestor][0]
        if ancestor != root:
            continue
        name = next((w.split(".")[1] for w in words if w.startswith("services.") and "." in w), "launcher")
        name = "worker" if "celery" in words else name
        used[name] = used.get(name, 0.0) + seconds
    return used


ENDED_BADLY = ("failed", "cancelled")


def listed_jobs(http: httpx.Client, job_ids: set[str]) -> list[dict[str, Any]]:
    """The upload's jobs as GET .../jobs lists them."""
    listed = http.get("/v1/knowledge_bases/bench/jobs", params={"limit": len(job_ids) + 10})
    return [job for job in listed.raise_for_status().json()["data"] if job["id"] in job_ids]


@dataclass
class StackRun:
    figure: Figure
    cpu_ms_per_file: dict[str, float]


class InstantEmbedder:
    """testing/instant_tei.py in its own process, for the stack's embed service to call."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "testing.instant_tei", "--port", str(self.port)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise RuntimeError(f"the instant embedder did not start; see {log_path}") from None
                time.sleep(0.2)

    def env(self) -> dict[str, str]:
        return {"ZHIKU_EMBED_BACKEND": "tei", "ZHIKU_EMBED_TEI_URL": self.url}

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_zhiku(model: str, files: list[tuple[str, str]], tei: InstantEmbedder | None = None) -> StackRun:
    embedder_env = tei.env() if tei is not None else {"ZHIKU_EMBED_LOCAL_MODEL": model}
    with tempfile.TemporaryDirectory() as tmp:
        stack = launch_in_background(
            Path(tmp) / "data",
            REPO / "test-output" / "bench" / f"ingest-{model}.log",
            {**embedder_env, "ZHIKU_GENERATE_BACKEND": "extractive", "ZHIKU_LOG_LEVEL": "WARNING"},
        )

        def cpu_now() -> dict[str, float]:
            used = cpu_seconds_by_process(stack.process.pid)
            if tei is not None:
                used["tei"] = process_cpu_seconds(tei.process.pid)
            return used

        try:
            with httpx.Client(base_url=stack.url, timeout=600) as http:
                http.post("/v1/knowledge_bases", json={"name": "bench"}).raise_for_status()
                expected = len(zhiku_chunks(files))  # before the clock: this process shares the cores
                cpu_before = cpu_now()
                started = time.perf_counter()

                def upload(batch: list[tuple[str, str]]) -> list[str]:
                    form = [("files", (name, text.encode(), "text/plain")) for name, text in batch]
                    reply = http.post("/v1/knowledge_bases/bench/files", files=form).raise_for_status()
                    return [job["id"] for job in reply.json()["jobs"]]

                # A bulk client keeps a few upload requests going; none waits for processing.
                batches = [
                    files[start : start + UPLOAD_BATCH] for start in range(0, len(files), UPLOAD_BATCH)
                ]
                with ThreadPoolExecutor(UPLOAD_CONCURRENCY) as pool:
                    job_ids = {job_id for ids in pool.map(upload, batches) for job_id in ids}
                print(
                    f"[bench-ingest] {model}: {len(files)} files accepted in "
                    f"{time.perf_counter() - started:.1f} s (202 answers; processing goes on)",
                    flush=True,
                )
                # The knowledge base's chunk count reaches the expected total only once every
                # file's job has succeeded (a file's count is written at its job's success):
                # a small read to poll, where listing every job each time would load the stack
                # it measures; the jobs are listed every 5 s to stop on a failure.
                listed_at = time.monotonic()
                while True:
                    kb = http.get("/v1/knowledge_bases/bench").raise_for_status().json()
                    if kb["chunk_count"] >= expected:
                        break
                    pause = poll_pause(kb["chunk_count"], expected, time.perf_counter() - started)
                    if time.monotonic() - listed_at > 5:
                        jobs = listed_jobs(http, job_ids)
                        failed = [job for job in jobs if job["state"] in ENDED_BADLY]
                        if failed:
                            raise RuntimeError(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
                        if all(job["state"] == "succeeded" for job in jobs):
                            break  # fewer chunks than expected: the check below says so
                        listed_at = time.monotonic()
                    time.sleep(pause)
                seconds = time.perf_counter() - started
                cpu = cpu_ms_per_file(cpu_before, cpu_now(), len(files))
                jobs = listed_jobs(http, job_ids)
                unfinished = [job for job in jobs if job["state"] != "succeeded"]
                if unfinished or len(jobs) != len(job_ids):
                    raise RuntimeError(f"{len(unfinished)} jobs did not succeed, e.g. {unfinished[:1]}")
                chunks = sum(job["chunks"] for job in jobs)
                if kb["chunk_count"] != chunks:
                    raise RuntimeError(f"catalog says {kb['chunk_count']} chunks, jobs {chunks}")
                print(f"[bench-ingest] {model}: CPU ms per file per process: {format_cpu(cpu)}", flush=True)
        finally:
            stack.stop()
    return StackRun(Figure(len(files), chunks, seconds), cpu)


class _BackendEmbeddings:
    """LangChain ``Embeddings`` over the same local backend Zhiku's embed service runs."""

    def __init__(self, backend: LocalBackend, loop: asyncio.AbstractEventLoop) -> None:
        self._backend = backend
        self._loop = loop

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self._loop.run_until_complete(self._backend.embed(texts, EmbedKind.PASSAGE))
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        vectors = self._loop.run_until_complete(self._backend.embed([text], EmbedKind.QUERY))
        return vectors[0].tolist()


class LocalEmbedder:
    """The embedding backend in this process, for the raw and the LangChain measurements."""

    def __init__(self, model: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.backend = LocalBackend(EmbedSettings(local_model=model, metrics_port=0))
        self.loop.run_until_complete(self.backend.start())
        # A first full batch allocates the runtime's buffers; keep that out of the timings.
        self.loop.run_until_complete(self.backend.embed(["预热 warm-up passage"] * 32, EmbedKind.PASSAGE))

    def raw(self, files: int, chunks: list[str]) -> Figure:
        """Every chunk in one call: sorted by length, the backend's own batches, nothing else."""
        started = time.perf_counter()
        self.loop.run_until_complete(self.backend.embed(chunks, EmbedKind.PASSAGE))
        return Figure(files, len(chunks), time.perf_counter() - started)

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.close()


def run_langchain(embedder: LocalEmbedder, files: list[tuple[str, str]]) -> Figure:
    from langchain_community.document_loaders import TextLoader
    from langchain_community.vectorstores import FAISS
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    Embeddings.register(_BackendEmbeddings)
    embeddings = _BackendEmbeddings(embedder.backend, embedder.loop)
    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, text in files:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        started = time.perf_counter()
        store = None
        count = 0
        for path in paths:
            docs = splitter.split_documents(TextLoader(str(path), encoding="utf-8").load())
            count += len(docs)
            if store is None:
                store = FAISS.from_documents(docs, embeddings)  # type: ignore[arg-type]
            else:
                store.add_documents(docs)
        if store is not None:
            store.save_local(str(Path(tmp) / "vector_store"))  # Chatchat persists after a build
        return Figure(len(files), count, time.perf_counter() - started)


@dataclass
class Trial:
    """One pass of a model: the stack's run and, for a local model, the raw reference around it."""

    run: StackRun
    raw: Figure | None = None

    @property
    def score(self) -> float:
        """What passes are ranked by: Zhiku's chunks/s over the raw reference's, or with the
        instant embedder (no reference) Zhiku's chunks/s."""
        zhiku = self.run.figure.chunks_per_s
        return zhiku / self.raw.chunks_per_s if self.raw is not None else zhiku


def median_trial(trials: list[Trial]) -> Trial:
    """The trial whose score is the median (the lower middle one of an even count)."""
    return sorted(trials, key=lambda trial: trial.score)[(len(trials) - 1) // 2]


def run_trials(model: str, files: list[tuple[str, str]], repeat: int) -> tuple[list[Trial], Figure | None]:
    """``repeat`` alternated passes of ``model`` (and the LangChain build once, with a local model).

    A shared machine's load changes by the second: the same code gave 49-77% of raw in single
    runs on one box. Each pass measures the raw reference right before and after the stack,
    so a pass's ratio compares figures taken under the same load, and the median pass is the
    figure reported; the spread is printed beside it.
    """
    if model == INSTANT:
        trials = []
        for _ in range(repeat):
            tei = InstantEmbedder(REPO / "test-output" / "bench" / "instant-tei.log")
            try:
                trials.append(Trial(run_zhiku(model, files, tei)))
            finally:
                tei.close()
        return trials, None
    chunks = zhiku_chunks(files)
    embedder = LocalEmbedder(model)
    trials = []
    langchain = None
    try:
        for _ in range(repeat):
            # Raw embedding before and after, so load that changes during the pass weighs on
            # the reference as it does on the pipelines in between.
            before = embedder.raw(len(files), chunks)
            run = run_zhiku(model, files)
            if langchain is None:
                langchain = run_langchain(embedder, files)
            after = embedder.raw(len(files), chunks)
            raw = Figure(len(files), len(chunks), (before.seconds + after.seconds) / 2)
            trials.append(Trial(run, raw))
            print(
                f"[bench-ingest] {model}: raw embed {before.chunks_per_s:.1f} chunks/s before, "
                f"{after.chunks_per_s:.1f} after (mean time used); zhiku "
                f"{run.figure.chunks_per_s:.1f} chunks/s = {trials[-1].score:.0%} of raw embed",
                flush=True,
            )
    finally:
        embedder.close()
    return trials, langchain


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["use", INSTANT, "e5"], choices=["use", "e5", INSTANT])
    parser.add_argument("--passages", type=int, default=848, help="CMRC passages (files) for fast models")
    parser.add_argument("--e5-passages", type=int, default=120, help="subset for e5 (~6 chunks/s on 2 cores)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternated passes of use and instant (median reported)"
    )
    parser.add_argument("--e5-repeat", type=int, default=1, help="passes of e5 (minutes each)")
    parser.add_argument(
        "--instant-before",
        type=float,
        default=INSTANT_BEFORE,
        help="chunks/s of the pipeline before the rework with the instant embedder (the 3x target)",
    )
    args = parser.parse_args()
    rows: list[tuple[str, str, Figure]] = []
    cpu: dict[str, dict[str, float]] = {}
    spreads: dict[str, list[Trial]] = {}
    langchains: dict[str, Figure] = {}
    for model in args.models:
        files = passages(args.e5_passages if model == "e5" else args.passages)
        repeat = max(1, args.e5_repeat if model == "e5" else args.repeat)
        print(f"[bench-ingest] {model}: {len(files)} files, {repeat} pass(es) ...", flush=True)
        trials, langchain = run_trials(model, files, repeat)
        spreads[model] = trials
        middle = median_trial(trials)
        cpu[model] = middle.run.cpu_ms_per_file
        rows.append((model, "zhiku (upload -> searchable)", middle.run.figure))
        if middle.raw is not None and langchain is not None:
            langchains[model] = langchain
            rows += [(model, "raw embed", middle.raw), (model, "langchain + FAISS (Chatchat)", langchain)]
    print("\nThe median pass of each model (its spread below):")
    print(f"{'model':<7} {'pipeline':<30} {'files':>6} {'chunks':>7} {'s':>7} {'chunks/s':>9} {'files/s':>8}")
    for model, name, figure in rows:
        print(
            f"{model:<7} {name:<30} {figure.files:>6} {figure.chunks:>7} {figure.seconds:>7.1f} "
            f"{figure.chunks_per_s:>9.1f} {figure.files_per_s:>8.2f}"
        )
    print("\nCPU ms per file per process in the median pass (first upload to the last job's success):")
    for model, per_file in cpu.items():
        print(f"{model:<7} {format_cpu(per_file)}")
    print()
    for model in args.models:
        trials = spreads[model]
        middle = median_trial(trials)
        zhiku = middle.run.figure
        if model == INSTANT:
            passes = ", ".join(f"{trial.run.figure.chunks_per_s:.1f}" for trial in trials)
            against = (
                f" = {zhiku.chunks_per_s / args.instant_before:.1f}x the ceiling before the rework "
                f"({args.instant_before:.1f} chunks/s; target >= 3x)"
                if args.instant_before
                else ""
            )
            print(f"{model}: pipeline ceiling {zhiku.chunks_per_s:.1f} chunks/s{against}; passes: {passes}")
            continue
        assert middle.raw is not None
        langchain = langchains[model]
        passes = ", ".join(f"{trial.score:.0%}" for trial in trials)
        print(
            f"{model}: zhiku / raw embed = {middle.score:.0%} (chunks/s, median of {len(trials)} "
            f"passes: {passes}{'; target >= 70%' if model == 'use' else ''}); "
            f"zhiku / langchain = {zhiku.files_per_s / langchain.files_per_s:.2f}x (files/s), "
            f"{zhiku.chunks_per_s / langchain.chunks_per_s:.2f}x (chunks/s)"
        )


if __name__ == "__main__":
    main()
