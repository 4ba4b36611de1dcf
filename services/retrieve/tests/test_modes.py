"""Dense, sparse and hybrid search through the real gRPC server, against every backend.

Scores follow services/retrieve/scores.py: dense (1 + cos) / 2, sparse s / (s + 10),
hybrid DBSF (each list rescaled by its mean +- 3 sample standard deviations, summed into x,
then x / (x + 1)) by default, or RRF normalised by its best attainable value (2 / 60 for two candidate lists).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import grpc
import pytest
from qdrant_client import models

from services.retrieve import scores
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.backends.edge_collection import create_on_disk
from services.retrieve.backends.qdrant import QdrantBackend
from services.retrieve.domain import DENSE
from services.retrieve.tests.conftest import (
    BACKEND_NAMES,
    Running,
    expect_error,
    make_point,
    make_settings,
    point_id,
    running,
)
from zhiku.v1 import common_pb2
from zhiku.v1 import retrieve_pb2 as pb

KB = "modes"
DIM = 4
E0 = [1.0, 0.0, 0.0, 0.0]
# (n, vector, file, text, metadata); dense order for E0 is 0, 1, 2, 3, 4.
POINTS = [
    (0, E0, "fruit.txt", "苹果 香蕉 橙子都是水果。", {"lang": "zh"}),
    (1, [0.9, 0.1, 0.0, 0.0], "fruit_en.txt", "A red apple and a yellow banana.", {"lang": "en"}),
    (2, [1.0, 1.0, 0.0, 0.0], "ops.txt", "服务器返回 ZX-9041 错误码时请重启。", {"lang": "zh"}),
    (3, [0.0, 1.0, 0.0, 0.0], "ops_en.txt", "The database returned an error code.", {"lang": "en"}),
    (4, [-1.0, 0.0, 0.0, 0.0], "milk.txt", "香蕉牛奶很好喝。", {"lang": "zh"}),
]
MODES = {
    "hybrid": pb.SEARCH_MODE_HYBRID,
    "dense": pb.SEARCH_MODE_DENSE,
    "sparse": pb.SEARCH_MODE_SPARSE,
}


async def seed(retrieve: Running) -> None:
    await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    points = [make_point(n, v, f, text=t, metadata=m) for n, v, f, t, m in POINTS]
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))


async def search(retrieve: Running, mode: str, text: str, **fields: Any) -> list[common_pb2.Passage]:
    fields.setdefault("top_k", 10)
    request = pb.SearchRequest(collection=KB, vector=E0, query_text=text, mode=MODES[mode], **fields)
    return list((await retrieve.stub.Search(request)).hits)


def ids(hits: list) -> list[str]:
    return [hit.chunk_id for hit in hits]


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_scores_are_in_unit_range_and_sorted(retrieve: Running, mode: str) -> None:
    await seed(retrieve)
    hits = await search(retrieve, mode, "香蕉 错误码 banana")
    assert hits
    values = [hit.score for hit in hits]
    assert all(0.0 <= value <= 1.0 for value in values)
    assert values == sorted(values, reverse=True)


async def test_sparse_ranks_by_shared_words_and_skips_unrelated(retrieve: Running) -> None:
    await seed(retrieve)
    hits = await search(retrieve, "sparse", "ZX-9041 错误码")
    assert ids(hits) == [point_id(2)]  # only chunk 2 shares a word with the query
    assert 0.0 < hits[0].score < 1.0
    banana = await search(retrieve, "sparse", "香蕉")
    assert set(ids(banana)) == {point_id(0), point_id(4)}


def dbsf_part(values: list[float]) -> list[float]:
    """One list's share of a DBSF score, as documented: (x - (mean - 3 sd)) / (6 sd)."""
    if len(values) == 1:
        return [0.5]
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    return [(x - (mean - 3 * sd)) / (6 * sd) for x in values]


async def test_hybrid_fuses_dense_and_sparse_scores_by_default(retrieve: Running) -> None:
    await seed(retrieve)
    hits = await search(retrieve, "hybrid", "ZX-9041 错误码")
    # Dense finds 0, 1, 2, 3, 4 (cosines below); sparse finds only 2, which alone in its list
    # counts 0.5 and lifts it to the top.
    assert ids(hits) == [point_id(n) for n in (2, 0, 1, 3, 4)]
    cosines = [1.0, 0.9 / (0.9**2 + 0.1**2) ** 0.5, 0.5**0.5, 0.0, -1.0]
    dense = dbsf_part(cosines)
    sums = [dense[2] + 0.5, dense[0], dense[1], dense[3], dense[4]]
    expected = [x / (x + 1) for x in sums]
    assert [hit.score for hit in hits] == pytest.approx(expected, abs=1e-5)
    assert max(expected) < 1.0 and min(expected) > 0.0


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def test_every_hit_carries_its_absolute_dense_score(retrieve: Running, mode: str) -> None:
    """Whichever list ranked a hit, ``dense_score`` is (1 + cos) / 2 of the query and its vector:
    the generate service reads it as an absolute closeness that fused scores cannot give."""
    await seed(retrieve)
    hits = await search(retrieve, mode, "香蕉 错误码 banana")
    assert hits
    cosine = {
        point_id(n): sum(a * b for a, b in zip(E0, v, strict=True)) / sum(x * x for x in v) ** 0.5
        for n, v, *_ in POINTS
    }
    assert [hit.dense_score for hit in hits] == pytest.approx(
        [(1 + cosine[hit.chunk_id]) / 2 for hit in hits], abs=1e-5
    )


async def test_dense_score_is_zero_in_sparse_mode(retrieve: Running) -> None:
    """Sparse mode drops the query vector, so there is nothing to be close to."""
    await seed(retrieve)
    hits = await search(retrieve, "sparse", "ZX-9041 错误码")
    assert hits and all(hit.dense_score == 0.0 for hit in hits)


def test_dbsf_scores_keep_standouts_apart() -> None:
    """Sums past 2 (a candidate more than 3 sd above the mean in both lists) still map to
    distinct scores below 1, so the engine's order among standouts survives the mapping."""
    sums = [0.0, 0.5, 1.0, 2.0, 2.4, 2.6, 5.0]
    mapped = [scores.map_score("hybrid", x, "dbsf") for x in sums]
    assert mapped == sorted(set(mapped)) and mapped[0] == 0.0 and mapped[-1] < 1.0
    assert mapped[2] == pytest.approx(0.5) and mapped[3] == pytest.approx(2 / 3)


async def test_hybrid_rrf_fuses_ranks_when_asked(retrieve: Running) -> None:
    await seed(retrieve)
    hits = await search(retrieve, "hybrid", "ZX-9041 错误码", fusion=pb.HYBRID_FUSION_RRF)
    # Dense ranks 0, 1, 2, 3, 4; sparse ranks only 2 (first): RRF lifts 2 to the top.
    assert ids(hits) == [point_id(n) for n in (2, 0, 1, 3, 4)]
    k = scores.RRF_K
    expected = [(1 / (k + 2) + 1 / k) * k / 2, 0.5, k / (k + 1) / 2, k / (k + 3) / 2, k / (k + 4) / 2]
    assert [hit.score for hit in hits] == pytest.approx(expected, abs=1e-5)


async def test_configured_fusion_is_the_default_and_unknown_fusion_is_rejected(retrieve: Running) -> None:
    await seed(retrieve)
    explicit = await search(retrieve, "hybrid", "ZX-9041 错误码", fusion=pb.HYBRID_FUSION_DBSF)
    unspecified = await search(retrieve, "hybrid", "ZX-9041 错误码")
    assert [(h.chunk_id, h.score) for h in explicit] == [(h.chunk_id, h.score) for h in unspecified]
    # fusion 7, which no HybridFusion names, is the case under test.
    request = pb.SearchRequest(collection=KB, vector=E0, query_text="x", fusion=7)  # type: ignore[arg-type]
    await expect_error(retrieve.stub.Search(request), grpc.StatusCode.INVALID_ARGUMENT, "fusion")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
async def test_hybrid_fusion_setting_changes_the_default(backend: str, tmp_path: Path) -> None:
    async with running(make_settings(backend, tmp_path, hybrid_fusion="rrf")) as served:
        await seed(served)
        unspecified = await search(served, "hybrid", "ZX-9041 错误码")
        rrf = await search(served, "hybrid", "ZX-9041 错误码", fusion=pb.HYBRID_FUSION_RRF)
        dbsf = await search(served, "hybrid", "ZX-9041 错误码", fusion=pb.HYBRID_FUSION_DBSF)
    assert [h.score for h in unspecified] == [h.score for h in rrf] != [h.score for h in dbsf]


async def test_default_mode_is_hybrid_and_falls_back_to_dense_without_text(retrieve: Running) -> None:
    await seed(retrieve)
    request = pb.SearchRequest(collection=KB, vector=E0, query_text="ZX-9041", top_k=10)
    assert ids((await retrieve.stub.Search(request)).hits)[0] == point_id(2)
    dense = await retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=E0, top_k=10))
    assert dense.hits[0].score == pytest.approx(1.0)
    assert ids(dense.hits) == [point_id(n) for n in range(5)]


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_threshold_keeps_scores_at_or_above_it(retrieve: Running, mode: str) -> None:
    await seed(retrieve)
    everything = await search(retrieve, mode, "香蕉 错误码 apple")
    threshold = everything[len(everything) // 2].score
    kept = await search(retrieve, mode, "香蕉 错误码 apple", score_threshold=threshold)
    assert ids(kept) == [hit.chunk_id for hit in everything if hit.score >= threshold]
    assert len(kept) < len(everything) or everything[-1].score == threshold


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_file_and_metadata_filters(retrieve: Running, mode: str) -> None:
    await seed(retrieve)
    text = "香蕉 banana apple 错误码 error"
    english = await search(retrieve, mode, text, metadata_filter={"lang": "en"})
    assert english and set(ids(english)) <= {point_id(1), point_id(3)}
    files = await search(retrieve, mode, text, file_names=["milk.txt", "fruit_en.txt"])
    assert files and set(ids(files)) <= {point_id(1), point_id(4)}
    both = await search(retrieve, mode, text, file_names=["milk.txt"], metadata_filter={"lang": "en"})
    assert both == []


async def test_sparse_needs_text_and_dense_needs_a_vector(retrieve: Running) -> None:
    await seed(retrieve)
    await expect_error(
        retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=E0, mode=pb.SEARCH_MODE_SPARSE)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "query_text",
    )
    await expect_error(
        retrieve.stub.Search(pb.SearchRequest(collection=KB, query_text="x", mode=pb.SEARCH_MODE_DENSE)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vector",
    )
    text_only = await retrieve.stub.Search(pb.SearchRequest(collection=KB, query_text="香蕉", top_k=5))
    assert set(ids(text_only.hits)) == {point_id(0), point_id(4)}  # hybrid without vector: sparse
    punctuation = await retrieve.stub.Search(
        pb.SearchRequest(collection=KB, query_text="？！", mode=pb.SEARCH_MODE_SPARSE)
    )
    assert list(punctuation.hits) == []


async def test_deleted_file_leaves_sparse_results(retrieve: Running) -> None:
    await seed(retrieve)
    await retrieve.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="ops.txt"))
    assert await search(retrieve, "sparse", "ZX-9041") == []


@pytest.mark.parametrize("layout", ["edge", "qdrant"])  # shared collections came with sparse vectors
async def test_dense_only_collection_falls_back(layout: str, tmp_path: Path) -> None:
    """A collection made before sparse vectors: hybrid searches dense, sparse is refused."""
    async with running(make_settings(layout, tmp_path)) as served:
        await _dense_only_collection_falls_back(served)


async def _dense_only_collection_falls_back(retrieve: Running) -> None:
    if isinstance(retrieve.backend, QdrantBackend):
        await retrieve.backend.client.create_collection(
            KB, vectors_config={DENSE: models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
        )
    else:
        assert isinstance(retrieve.backend, EdgeBackend)
        create_on_disk(retrieve.backend.root / KB, DIM, retrieve.backend._options, sparse=False)
    points = [make_point(n, v, f, text=t, metadata=m) for n, v, f, t, m in POINTS]
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))
    assert not (await retrieve.stub.Stats(pb.StatsRequest(collection=KB))).sparse
    hybrid = await search(retrieve, "hybrid", "ZX-9041")
    assert ids(hybrid) == [point_id(n) for n in range(5)]
    assert hybrid[0].score == pytest.approx(1.0)
    await expect_error(
        retrieve.stub.Search(pb.SearchRequest(collection=KB, query_text="x", mode=pb.SEARCH_MODE_SPARSE)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "sparse",
    )
