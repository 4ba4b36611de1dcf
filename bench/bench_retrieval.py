"""Retrieval quality of dense, sparse and hybrid search against a Chatchat-style baseline.

For each dataset and each bundled embedding model this indexes every passage the way the
ingest worker does (``services.ingest.documents.splitter.split_text``, 250/50) into the real retrieve
service (edge backend, in-process gRPC on a free port) and asks every question through
``Search`` in each mode. Next to it, in the same run and with the same embeddings, a
Chatchat-style baseline: LangChain's RecursiveCharacterTextSplitter(250, 50) (reimplemented
below, no LangChain) and a FAISS inner-product index over the same model.

A question's hit is any returned chunk of its gold passage: the ranked chunk list is reduced
to distinct passages (first occurrence), then recall@1/5/10 and MRR@10 are computed.

Parent-child rows index the same passages in parent-child mode
(``services.ingest.documents.parent_child``, as the worker does with ``parent_child``):
children of 125/25 characters are embedded and searched, parents are bounded at 1500 (so a
passage is one parent or a few). Recall counts the child hits mapped to their passages, the
same reduction as the plain rows. The sizes were fixed before the first run, never tuned.

* CMRC 2018 dev (zh): all 848 passages, all 3,219 questions.
* SQuAD 2.0 sample (en): all 411 passages, the 242 answerable questions.

Embeddings are cached under ``bench/.cache/`` (e5 embeds ~1.5 passages/s on 2 cores), so a
second run costs only the searches. Data: ``$ZHIKU_EVALDATA`` or ``../shared/evaldata``.

    python -m bench.bench_retrieval [--models use,e5] [--datasets cmrc,squad] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from bench.bench_embed import RetrievalSet, evaldata_dir, load_cmrc, load_squad
from services.common.config import CommonSettings
from services.common.grpc_server import GrpcService
from services.embed import rerank
from services.embed.backends.local import LocalBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind
from services.ingest.documents.parent_child import split_parent_child
from services.ingest.documents.parsers import Segment
from services.ingest.documents.splitter import split_text
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec
from zhiku.v1 import retrieve_pb2 as pb
from zhiku.v1 import retrieve_pb2_grpc

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
CHUNK_SIZE, CHUNK_OVERLAP = 250, 50
# Parent-child mode: children embedded and matched, parents (what an answer reads) bounded.
CHILD_SIZE, CHILD_OVERLAP, PARENT_SIZE = 125, 25, 1500
KS = (1, 5, 10)
CANDIDATE_CHUNKS = 40  # chunks fetched per question, reduced to distinct passages
MODES = {"dense": pb.SEARCH_MODE_DENSE, "sparse": pb.SEARCH_MODE_SPARSE, "hybrid": pb.SEARCH_MODE_HYBRID}
# Systems in the recall tables: each mode, plus hybrid with the other fusion (the default is DBSF).
SYSTEMS = {name: (mode, pb.HYBRID_FUSION_UNSPECIFIED) for name, mode in MODES.items()}
SYSTEMS["hybrid (rrf)"] = (pb.SEARCH_MODE_HYBRID, pb.HYBRID_FUSION_RRF)
CONCURRENCY = 8
RERANK_WEIGHT = EmbedSettings.model_fields["rerank_lexical_weight"].default


# ----- Chatchat's splitter: LangChain RecursiveCharacterTextSplitter, reimplemented -----

# Chatchat's ChineseRecursiveTextSplitter separators, simplified to fixed strings.
_SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ".", "!", "?", ";", "，", ",", " ", ""]


def recursive_split(text: str, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """Split on the first separator present, recurse into pieces still too long, then merge
    pieces into chunks of at most ``size`` characters carrying up to ``overlap`` back."""
    return [chunk for chunk in (c.strip() for c in _split(text, _SEPARATORS, size, overlap)) if chunk]


def _split(text: str, separators: list[str], size: int, overlap: int) -> list[str]:
    separator, rest = separators[-1], []
    for i, candidate in enumerate(separators):
        if candidate == "" or candidate in text:
            separator, rest = candidate, separators[i + 1 :]
            break
    pieces = text.split(separator) if separator else list(text)
    pieces = [p + separator for p in pieces[:-1]] + pieces[-1:] if separator else pieces
    chunks: list[str] = []
    good: list[str] = []
    for piece in pieces:
        if len(piece) <= size:
            good.append(piece)
            continue
        chunks.extend(_merge(good, size, overlap))
        good = []
        chunks.extend(_split(piece, rest, size, overlap) if rest else [piece])
    chunks.extend(_merge(good, size, overlap))
    return chunks


def _merge(pieces: list[str], size: int, overlap: int) -> list[str]:
    chunks: list[str] = []
    window: list[str] = []
    total = 0
    for piece in pieces:
        if window and total + len(piece) > size:
            chunks.append("".join(window))
            while window and (total > overlap or total + len(piece) > size):
                total -= len(window.pop(0))
        window.append(piece)
        total += len(piece)
    if window:
        chunks.append("".join(window))
    return chunks


def parent_child_split(text: str) -> list[str]:
    """The children the ingest worker embeds in parent-child mode (their parents are not indexed)."""
    chunks = split_parent_child([Segment(text, {})], "p.txt", CHILD_SIZE, CHILD_OVERLAP, PARENT_SIZE)
    return [chunk.text for chunk in chunks]


# ----- embeddings, cached on disk -----


class EmbeddingCache:
    """Vectors by (model, kind, text hash) in one ``.npz`` per model."""

    def __init__(self, model: str) -> None:
        self.path = CACHE_DIR / f"embeddings-{model}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            data = np.load(self.path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    @staticmethod
    def key(kind: EmbedKind, text: str) -> str:
        return hashlib.sha1(f"{kind.value}\0{text}".encode()).hexdigest()

    def save(self) -> None:
        if not self.vectors:
            return
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.asarray(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        tmp.replace(self.path)


async def embed_all(
    backend: LocalBackend, cache: EmbeddingCache, texts: Sequence[str], kind: EmbedKind
) -> np.ndarray:
    missing = list(dict.fromkeys(t for t in texts if cache.key(kind, t) not in cache.vectors))
    started = time.perf_counter()
    for start in range(0, len(missing), 64):
        batch = missing[start : start + 64]
        for text, vector in zip(batch, await backend.embed(batch, kind), strict=True):
            cache.vectors[cache.key(kind, text)] = vector
        if start // 64 % 10 == 9:
            cache.save()
        print(f"    embedded {min(start + 64, len(missing))}/{len(missing)} {kind.value}", file=sys.stderr)
    if missing:
        cache.save()
        rate = len(missing) / (time.perf_counter() - started)
        print(f"    {len(missing)} new {kind.value} embeddings at {rate:.1f}/s", file=sys.stderr)
    return np.stack([cache.vectors[cache.key(kind, t)] for t in texts]).astype(np.float32)


# ----- metrics -----


@dataclass
class Row:
    dataset: str
    model: str
    system: str
    recall: dict[int, float]
    mrr10: float
    p50_ms: float | None = None
    p99_ms: float | None = None


def score(rankings: Sequence[Sequence[int]], gold: Sequence[int]) -> tuple[dict[int, float], float]:
    recall = dict.fromkeys(KS, 0.0)
    mrr = 0.0
    for ranked, answer in zip(rankings, gold, strict=True):
        distinct = list(dict.fromkeys(ranked))[:10]
        if answer in distinct:
            rank = distinct.index(answer)
            mrr += 1.0 / (rank + 1)
            for k in KS:
                recall[k] += rank < k
    n = len(gold)
    return {k: v / n for k, v in recall.items()}, mrr / n


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----- the systems -----


def chunked(passages: Sequence[str], splitter: Callable[[str], list[str]]) -> tuple[list[str], list[int]]:
    texts, owners = [], []
    for index, passage in enumerate(passages):
        for chunk in splitter(passage):
            texts.append(chunk)
            owners.append(index)
    return texts, owners


def faiss_baseline(
    chunk_vectors: np.ndarray, owners: list[int], query_vectors: np.ndarray
) -> list[list[int]]:
    import faiss  # dev dependency, baseline only

    index = faiss.IndexFlatIP(chunk_vectors.shape[1])
    index.add(chunk_vectors)
    _, found = index.search(query_vectors, CANDIDATE_CHUNKS)
    return [[owners[i] for i in row if i >= 0] for row in found]


async def zhiku_search(
    stub: retrieve_pb2_grpc.RetrieveServiceStub,
    kb: str,
    questions: list[str],
    query_vectors: np.ndarray,
    mode: int,
    fusion: int = pb.HYBRID_FUSION_UNSPECIFIED,
) -> tuple[list[list[int]], list[float]]:
    rankings: list[list[int]] = [[] for _ in questions]
    latencies: list[float] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        request = pb.SearchRequest(
            collection=kb,
            vector=query_vectors[i].tolist(),
            query_text=questions[i],
            mode=mode,
            fusion=fusion,
            top_k=CANDIDATE_CHUNKS,
        )
        async with gate:
            started = time.perf_counter()
            reply = await stub.Search(request)
            latencies.append((time.perf_counter() - started) * 1000)
        rankings[i] = [hit.chunk_index for hit in reply.hits]

    await asyncio.gather(*(one(i) for i in range(len(questions))))
    return rankings, latencies


async def run_dataset(
    data: RetrievalSet, model: str, backend: LocalBackend, stub: retrieve_pb2_grpc.RetrieveServiceStub
) -> list[Row]:
    cache = EmbeddingCache(model)
    zh_texts, zh_owners = chunked(data.passages, lambda p: split_text(p, CHUNK_SIZE, CHUNK_OVERLAP))
    cc_texts, cc_owners = chunked(data.passages, recursive_split)
    pc_texts, pc_owners = chunked(data.passages, parent_child_split)
    print(
        f"  {data.name} / {model}: {len(zh_texts)} zhiku chunks, {len(cc_texts)} baseline, "
        f"{len(pc_texts)} parent-child children",
        file=sys.stderr,
    )
    every = list(dict.fromkeys(zh_texts + cc_texts + pc_texts))
    vectors = await embed_all(backend, cache, every, EmbedKind.PASSAGE)
    by_text = dict(zip(every, vectors, strict=True))
    queries = await embed_all(backend, cache, data.questions, EmbedKind.QUERY)

    rows = []
    baseline = faiss_baseline(np.stack([by_text[t] for t in cc_texts]), cc_owners, queries)
    recall, mrr = score(baseline, data.gold)
    rows.append(Row(data.name, model, "chatchat-faiss", recall, mrr))

    kb = f"bench-{hashlib.sha1(f'{data.name}{model}'.encode()).hexdigest()[:10]}"
    await upsert_chunks(stub, kb, zh_texts, zh_owners, by_text)
    for name, (mode, fusion) in SYSTEMS.items():
        chunks, latencies = await zhiku_search(stub, kb, data.questions, queries, mode, fusion)
        recall, mrr = score([[zh_owners[c] for c in ranked] for ranked in chunks], data.gold)
        rows.append(
            Row(data.name, model, name, recall, mrr, percentile(latencies, 0.5), percentile(latencies, 0.99))
        )
        if name == "hybrid":
            reranked = [
                local_rerank(data.questions[i], queries[i], ranked, zh_texts, by_text)
                for i, ranked in enumerate(chunks)
            ]
            recall, mrr = score([[zh_owners[c] for c in ranked] for ranked in reranked], data.gold)
            rows.append(Row(data.name, model, "hybrid+local rerank", recall, mrr))
    # Parent-child: the children are what is searched; each hit counts as its passage.
    await upsert_chunks(stub, f"{kb}-pc", pc_texts, pc_owners, by_text)
    for name, mode in MODES.items():
        chunks, latencies = await zhiku_search(stub, f"{kb}-pc", data.questions, queries, mode)
        recall, mrr = score([[pc_owners[c] for c in ranked] for ranked in chunks], data.gold)
        rows.append(
            Row(
                data.name,
                model,
                f"parent-child {name}",
                recall,
                mrr,
                percentile(latencies, 0.5),
                percentile(latencies, 0.99),
            )
        )
    return rows


async def upsert_chunks(
    stub: retrieve_pb2_grpc.RetrieveServiceStub,
    kb: str,
    texts: list[str],
    owners: list[int],
    by_text: dict[str, np.ndarray],
) -> None:
    """Index ``texts`` (chunk_index = position, file_name = the owning passage) in ``kb``."""
    dimension = len(next(iter(by_text.values())))
    await stub.EnsureCollection(pb.EnsureCollectionRequest(collection=kb, dimension=dimension))
    points = [
        pb.Point(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kb}/{i}")),
            vector=by_text[text].tolist(),
            file_name=str(owner),
            chunk_index=i,
            text=text,
        )
        for i, (text, owner) in enumerate(zip(texts, owners, strict=True))
    ]
    for start in range(0, len(points), 256):
        await stub.Upsert(pb.UpsertRequest(collection=kb, points=points[start : start + 256]))


def local_rerank(
    question: str, query: np.ndarray, ranked: list[int], texts: list[str], by_text: dict[str, np.ndarray]
) -> list[int]:
    """The embed service's local reranker (same function) over the first 20 hybrid chunks."""
    head = ranked[:20]
    if not head:
        return ranked
    passages = [texts[c] for c in head]
    scores = rerank.blend(query, np.stack([by_text[p] for p in passages]), question, passages, RERANK_WEIGHT)
    order = sorted(range(len(head)), key=lambda j: -scores[j])
    return [head[j] for j in order] + ranked[20:]


async def main_async(args: argparse.Namespace) -> list[Row]:
    root = evaldata_dir()
    loaders = {
        "cmrc": lambda: load_cmrc(root, args.limit or 10**9),
        "squad": lambda: load_squad(root),
    }
    sets = [loaders[name]() for name in args.datasets.split(",")]
    if args.limit:
        sets = [_limit(data, args.limit) for data in sets]
    rows: list[Row] = []
    sizes = [int(size) for size in args.latency.split(",") if size]
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-retrieval-") as tmp:
        settings = RetrieveSettings(
            backend="edge",
            grpc_host="127.0.0.1",
            grpc_port=0,
            metrics_port=0,
            common=CommonSettings(data_dir=Path(tmp), log_json=False),
            edge_optimize_delay_s=0,
        )
        edge = EdgeBackend(settings)
        service = GrpcService(build_spec(settings, edge), settings)
        await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                stub = retrieve_pb2_grpc.RetrieveServiceStub(channel)
                for model in args.models.split(","):
                    backend = LocalBackend(EmbedSettings(local_model=model, metrics_port=0))
                    await backend.start()
                    try:
                        for data in sets:
                            rows.extend(await run_dataset(data, model, backend, stub))
                            print_rows(rows)
                        if sizes and model == args.models.split(",")[0]:
                            await latency(stub, edge, sets[0], model, sizes)
                    finally:
                        await backend.close()
        finally:
            await service.stop()
    return rows


async def latency(
    stub: retrieve_pb2_grpc.RetrieveServiceStub,
    edge: EdgeBackend,
    data: RetrievalSet,
    model: str,
    sizes: list[int],
) -> None:
    """Sequential Search latency per mode at each size: the first set's chunks (cached
    embeddings, jittered so copies differ) repeated up to ``size`` points, index built first
    as the service does in the background once writes settle (edge, >= 20k unindexed)."""
    cache = EmbeddingCache(model)
    texts, _ = chunked(data.passages, lambda p: split_text(p, CHUNK_SIZE, CHUNK_OVERLAP))
    base = np.stack([cache.vectors[cache.key(EmbedKind.PASSAGE, t)] for t in texts])
    questions = data.questions[:300]
    queries = np.stack([cache.vectors[cache.key(EmbedKind.QUERY, q)] for q in questions])
    rng = np.random.default_rng(7)
    print(f"\n| chunks | mode | gRPC Search p50 ms | p99 ms | (sequential, top_k 10, {model} vectors) |")
    print("|---|---|---|---|---|")
    for size in sizes:
        kb = f"latency-{size}"
        await stub.EnsureCollection(pb.EnsureCollectionRequest(collection=kb, dimension=base.shape[1]))
        started = time.perf_counter()
        for start in range(0, size, 512):
            ids = range(start, min(start + 512, size))
            vectors = base[[i % len(base) for i in ids]] + rng.normal(0, 0.02, (len(ids), base.shape[1]))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            points = [
                pb.Point(
                    id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kb}/{i}")),
                    vector=vector.tolist(),
                    file_name=f"f{i % 997}",
                    chunk_index=i,
                    text=texts[i % len(texts)],
                )
                for i, vector in zip(ids, vectors, strict=True)
            ]
            await stub.Upsert(pb.UpsertRequest(collection=kb, points=points))
        upsert_s = time.perf_counter() - started
        outcome = await edge.optimize(kb) if size >= 20_000 else "exact (below the index threshold)"
        print(f"<!-- {size} points upserted in {upsert_s:.0f} s; index: {outcome} -->", file=sys.stderr)
        for name, mode in MODES.items():
            times = []
            for i, question in enumerate(questions):
                request = pb.SearchRequest(
                    collection=kb, vector=queries[i].tolist(), query_text=question, mode=mode, top_k=10
                )
                begun = time.perf_counter()
                await stub.Search(request)
                times.append((time.perf_counter() - begun) * 1000)
            print(f"| {size:,} | {name} | {percentile(times, 0.5):.1f} | {percentile(times, 0.99):.1f} | |")
            sys.stdout.flush()
        await stub.DropCollection(pb.DropCollectionRequest(collection=kb))


def _limit(data: RetrievalSet, limit: int) -> RetrievalSet:
    """The first ``limit`` passages and their questions (quick runs)."""
    keep = [i for i, gold in enumerate(data.gold) if gold < limit]
    return RetrievalSet(
        f"{data.name.split(' (')[0]} ({min(limit, len(data.passages))} p)",
        data.passages[:limit],
        [data.questions[i] for i in keep],
        [data.gold[i] for i in keep],
    )


def print_rows(rows: list[Row]) -> None:
    print("\n| dataset | model | system | R@1 | R@5 | R@10 | MRR@10 | gRPC search p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        latency = f"{row.p50_ms:.1f} | {row.p99_ms:.1f}" if row.p50_ms is not None else "- | -"
        print(
            f"| {row.dataset} | {row.model} | {row.system} | {row.recall[1]:.3f} | {row.recall[5]:.3f} "
            f"| {row.recall[10]:.3f} | {row.mrr10:.3f} | {latency} |"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="use,e5")
    parser.add_argument("--datasets", default="cmrc,squad")
    parser.add_argument("--limit", type=int, default=0, help="only the first N passages of each set")
    parser.add_argument(
        "--latency", default="10000,100000", help="collection sizes for search latency ('' skips)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    asyncio.run(main_async(args))
    print(f"\n{time.perf_counter() - started:.0f} s; questions with a gold passage; hits = distinct passages")


if __name__ == "__main__":
    main()
