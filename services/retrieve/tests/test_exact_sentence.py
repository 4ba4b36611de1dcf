"""The reason sparse vectors exist: an exact sentence that dense search does not find.

A rare identifier sits inside a chunk about something else, among many short chunks that
name look-alike identifiers. Embedded with the bundled USE model (real vectors), the
distractors are all nearer the query than the target, so dense search misses it; the
sparse vector matches its rare tokens and ranks it first, and hybrid lifts it above its
dense rank (rank fusion cannot promise more when one list puts it last).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from services.embed.domain import EmbedKind
from services.embed.models.use import UseEncoder
from services.retrieve.tests.conftest import Running, make_point, point_id
from zhiku.v1 import retrieve_pb2 as pb

KB = "manuals"
LOOKALIKES = (9014, 9401, 9410, 9104, 9140, 4091, 4019, 1049, 1094, 9042, 9043, 9044, 9045, 9046, 9047)
DISTRACTORS = [f"设备面板显示 ZX-{code}-错误码 时怎么办？请先断电，再联系售后。" for code in LOOKALIKES]
TARGET = (
    "今天的午餐是红烧肉和米饭，食堂阿姨多给了一勺汤。"
    "设备面板显示 ZX-9041-错误码 时请更换滤芯。下午三点开会讨论团建。"
)
QUERY = "设备面板显示 ZX-9041-错误码 时请更换滤芯。"
TARGET_N = len(DISTRACTORS)


@pytest.fixture(scope="module")
def embed() -> Callable[[list[str], EmbedKind], np.ndarray]:
    return UseEncoder(threads=1).encode


async def test_sparse_finds_the_exact_sentence_dense_misses(retrieve: Running, embed: Callable) -> None:
    texts = [*DISTRACTORS, TARGET]
    vectors = embed(texts, EmbedKind.PASSAGE)
    await retrieve.stub.EnsureCollection(
        pb.EnsureCollectionRequest(collection=KB, dimension=vectors.shape[1])
    )
    points = [make_point(n, vectors[n].tolist(), f"doc{n}.txt", text=text) for n, text in enumerate(texts)]
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))
    query = embed([QUERY], EmbedKind.QUERY)[0].tolist()

    async def top(mode: pb.SearchMode, k: int = 5) -> list[str]:
        request = pb.SearchRequest(collection=KB, vector=query, query_text=QUERY, mode=mode, top_k=k)
        return [hit.chunk_id for hit in (await retrieve.stub.Search(request)).hits]

    target = point_id(TARGET_N)
    assert target not in await top(pb.SEARCH_MODE_DENSE, k=10)
    assert (await top(pb.SEARCH_MODE_SPARSE))[0] == target
    everything = len(DISTRACTORS) + 1
    dense_rank = (await top(pb.SEARCH_MODE_DENSE, everything)).index(target)
    assert (await top(pb.SEARCH_MODE_HYBRID, everything)).index(target) < dense_rank
