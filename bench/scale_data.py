"""Real chunks and their embeddings for ``bench_scale``: CMRC and SQuAD passages cut as the
ingest worker cuts them (250/50), embedded once with the bundled default model (e5, 384-d)
and cached under ``bench/.cache/`` (gitignored), with real questions as queries.

The default model embeds a few chunks a second on 2 shared cores, so the base set is capped
(``--base-chunks``); the benchmark makes its 100k and 1M points from jittered copies of it.

    python -m bench.scale_data [--base-chunks 1200] [--queries 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.bench_embed import evaldata_dir, load_cmrc, load_squad
from services.embed.backends.local import LocalBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind
from services.ingest.documents.splitter import split_text

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
CHUNK_SIZE, CHUNK_OVERLAP = 250, 50
BATCH = 32


@dataclass
class ScaleData:
    texts: list[str]
    vectors: np.ndarray  # (len(texts), dim), normalised
    questions: list[str]
    queries: np.ndarray  # (len(questions), dim)


def cache_path(model: str) -> Path:
    return CACHE_DIR / f"scale-{model}.npz"


def _interleaved(first: list[str], second: list[str], limit: int) -> list[str]:
    """Alternate two-to-one between Chinese and English items, up to ``limit``."""
    out: list[str] = []
    a, b = iter(first), iter(second)
    while len(out) < limit:
        taken = [x for x in (next(a, None), next(a, None), next(b, None)) if x is not None]
        if not taken:
            break
        out.extend(taken)
    return out[:limit]


def _chunks(passages: list[str]) -> list[str]:
    return [chunk for passage in passages for chunk in split_text(passage, CHUNK_SIZE, CHUNK_OVERLAP)]


async def _embed(backend: LocalBackend, texts: list[str], kind: EmbedKind) -> np.ndarray:
    out = []
    started = time.perf_counter()
    for start in range(0, len(texts), BATCH):
        out.append(await backend.embed(texts[start : start + BATCH], kind))
        done = min(start + BATCH, len(texts))
        rate = done / (time.perf_counter() - started)
        print(f"    embedded {done}/{len(texts)} {kind.value} ({rate:.1f}/s)", file=sys.stderr)
    vectors = np.concatenate(out).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def build(model: str, base_chunks: int, queries: int) -> ScaleData:
    root = evaldata_dir()
    cmrc, squad = load_cmrc(root, 10**9), load_squad(root)
    texts = _interleaved(_chunks(cmrc.passages), _chunks(squad.passages), base_chunks)
    questions = _interleaved(cmrc.questions, squad.questions, queries)
    backend = LocalBackend(EmbedSettings(local_model=model, metrics_port=0))
    await backend.start()
    try:
        query_vectors = await _embed(backend, questions, EmbedKind.QUERY)
        vectors = await _embed(backend, texts, EmbedKind.PASSAGE)
    finally:
        await backend.close()
    return ScaleData(texts, vectors, questions, query_vectors)


def load(model: str, base_chunks: int, queries: int) -> ScaleData:
    """The cached set, built first when missing or smaller than asked."""
    path = cache_path(model)
    if path.exists():
        with np.load(path) as saved:
            data = ScaleData(
                saved["texts"].tolist(), saved["vectors"], saved["questions"].tolist(), saved["queries"]
            )
        if len(data.texts) >= base_chunks and len(data.questions) >= queries:
            return data
    data = asyncio.run(build(model, base_chunks, queries))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial,
        texts=np.asarray(data.texts),
        vectors=data.vectors,
        questions=np.asarray(data.questions),
        queries=data.queries,
    )
    partial.replace(path)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=EmbedSettings.model_fields["local_model"].default)
    parser.add_argument("--base-chunks", type=int, default=1200)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    data = load(args.model, args.base_chunks, args.queries)
    print(f"{len(data.texts)} chunks x {data.vectors.shape[1]}-d, {len(data.questions)} questions")


if __name__ == "__main__":
    main()
