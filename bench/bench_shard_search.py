"""What one shard ask of an edge search costs, and what int8 quantization changes.

``make bench-scale`` showed that a hybrid search's latency follows the number of shards it
asks. This bench opens the costs up: for each dense storage it fills a knowledge base (the
same data as bench-scale: real chunks and jittered copies, through the real retrieve gRPC
service and its writer process), lets its index builds settle, then measures with the
service's own shards:

* the engine time of one shard ask: dense (the collection's search parameters, and at a
  lower HNSW ``ef``), dense exact, sparse (a share and all ``hybrid_candidates``);
* recall@10 and @50 of the dense candidates merged over shards against an exact search;
* a whole hybrid search in the service (no gRPC), p50 and p99.

Recall is measured on questions the other benches do not report on (the scale set's
questions after the first ``--queries``, which bench-scale searches with), so choosing a
default from it is not tuning on reported questions.

    python -m bench.bench_shard_search [--size 100000] [--storages none,int8] [--queries 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import QuantizationSearchParams, Query, QueryBatchRequest, QueryRequest, SearchParams
from qdrant_edge import SparseVector as EdgeSparseVector

from bench.bench_scale import KB, edge_settings, settle, spawn
from bench.scale_data import load
from services.common.grpc_server import GrpcService
from services.common.sparse import SPARSE, SparseEncoder
from services.embed.config import EmbedSettings
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.backends.edge_terms import query_weights
from services.retrieve.domain import DENSE, MODE_HYBRID, SearchQuery
from services.retrieve.server import build_spec

LOWER_EF = 64
EXACT = SearchParams(exact=True, quantization=QuantizationSearchParams(ignore=True))


def ms(samples: list[float]) -> str:
    values = np.asarray(samples)
    return f"{np.mean(values):.3f} / {np.percentile(values, 99):.3f}"


async def measure(storage: str, args: argparse.Namespace, held_out: np.ndarray) -> dict[str, str]:
    """Fill a knowledge base of ``args.size`` with ``storage`` dense vectors; its figures."""
    data = load(args.model, 1200, args.queries * 2)
    encoder = SparseEncoder()
    sparse = [encoder.query(question) for question in data.questions[: args.queries]]
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-shards-") as tmp:
        settings = edge_settings(Path(tmp), edge_quantization=storage)
        edge = EdgeBackend(settings)
        service = GrpcService(build_spec(settings, edge), settings)
        await service.start()
        try:
            args_ = ["--role", "writer", "--port", str(service.port), "--start", "0"]
            fill = await spawn(*args_, "--count", str(args.size), "--batch", "512", "--model", args.model)
            await fill.communicate()
            await settle(edge)
            collection = await edge.collection(KB)
            queries = [
                SearchQuery(
                    vector=data.queries[i].tolist(), top_k=10, score_threshold=0.0, mode=MODE_HYBRID, sparse=s
                )
                for i, s in enumerate(sparse)
            ]
            searches = []
            for query in queries * 2:  # the first pass warms the page cache
                began = time.perf_counter()
                await collection.search(query)
                searches.append((time.perf_counter() - began) * 1000)
            searches = searches[len(queries) :]
            async with collection._all_shards() as held:
                shards = [shard for _, shard in held]
                weights = [
                    query_weights(
                        s.indices, s.values, [u.terms for u, _ in held], [u.engine_idf for u, _ in held]
                    )
                    for s in sparse
                ]

                def asks(make: Callable[[int, int], QueryRequest | None]) -> list[float]:
                    times = []
                    for q in range(len(queries)):
                        for position, shard in enumerate(shards):
                            request = make(q, position)
                            if request is None:
                                continue
                            began = time.perf_counter()
                            shard.query_batch(QueryBatchRequest([request]))
                            times.append((time.perf_counter() - began) * 1000)
                    return times

                def dense(params: Any, limit: int = 10) -> Callable[[int, int], QueryRequest]:
                    return lambda q, _: QueryRequest(
                        limit=limit, query=Query.Nearest(queries[q].vector, using=DENSE), params=params
                    )

                def lexical(limit: int) -> Callable[[int, int], QueryRequest | None]:
                    def make(q: int, position: int) -> QueryRequest | None:
                        terms, values = weights[q][position]
                        vector = EdgeSparseVector(terms, values)
                        return (
                            QueryRequest(limit=limit, query=Query.Nearest(vector, using=SPARSE))
                            if terms
                            else None
                        )

                    return make

                def merged(vector: list[float], params: Any, limit: int) -> set[str]:
                    found = []
                    for shard in shards:
                        request = QueryRequest(
                            limit=limit, query=Query.Nearest(vector, using=DENSE), params=params
                        )
                        found += [
                            (p.score, str(p.id)) for p in shard.query_batch(QueryBatchRequest([request]))[0]
                        ]
                    return {point for _, point in sorted(found, reverse=True)[:limit]}

                def recall(params: Any, limit: int) -> float:
                    hits = [
                        len(merged(v.tolist(), params, limit) & merged(v.tolist(), EXACT, limit)) / limit
                        for v in held_out
                    ]
                    return float(np.mean(hits))

                def recalls(params: Any) -> str:
                    return f"{recall(params, 10):.4f} / {recall(params, 50):.4f}"

                lower = SearchParams(
                    hnsw_ef=LOWER_EF, quantization=(collection._search_params or SearchParams()).quantization
                )
                share = -(-2 * settings.hybrid_candidates // len(shards))
                return {
                    "shards": str(len(shards)),
                    "dense ask ms, mean / p99": ms(asks(dense(collection._search_params))),
                    f"dense ask at ef {LOWER_EF} ms": ms(asks(dense(lower))),
                    "dense exact ask ms": ms(asks(dense(EXACT))),
                    f"sparse ask ms, {share} / {settings.hybrid_candidates} candidates": (
                        f"{np.mean(asks(lexical(share))):.3f} / "
                        f"{np.mean(asks(lexical(settings.hybrid_candidates))):.3f}"
                    ),
                    "dense recall@10 / @50 vs exact (held-out questions)": recalls(collection._search_params),
                    f"dense recall@10 / @50 at ef {LOWER_EF}": recalls(lower),
                    "hybrid search in the service ms, p50 / p99": (
                        f"{np.percentile(searches, 50):.2f} / {np.percentile(searches, 99):.2f}"
                    ),
                }
        finally:
            await service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--storages", default="none,int8", help="edge_quantization values to compare")
    parser.add_argument("--queries", type=int, default=300, help="searched; as many more held out for recall")
    parser.add_argument("--model", default=EmbedSettings.model_fields["local_model"].default)
    args = parser.parse_args()
    data = load(args.model, 1200, args.queries * 2)
    held_out = data.queries[args.queries : args.queries * 2]
    storages = [s for s in args.storages.split(",") if s]
    columns = {storage: asyncio.run(measure(storage, args, held_out)) for storage in storages}
    print(f"\n{args.size:,} chunks ({len(held_out)} held-out questions for recall)\n")
    print("| | " + " | ".join(f"dense {s}" for s in storages) + " |")
    print("|---|" + "---|" * len(storages))
    for name in columns[storages[0]]:
        print(f"| {name} | " + " | ".join(columns[s][name] for s in storages) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
