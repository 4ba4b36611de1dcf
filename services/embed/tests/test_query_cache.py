"""The query-embedding LRU: a repeated question is answered without calling the model."""

from __future__ import annotations

import numpy as np

from services.embed.tests.backends.test_tei import embed_batches, tei_settings
from services.embed.tests.conftest import embed, running_embed
from services.embed.tests.fake_tei import FakeTei
from zhiku.v1 import embed_pb2

QUERY = embed_pb2.EMBED_KIND_QUERY


async def test_repeated_queries_hit_the_cache_and_old_ones_are_evicted() -> None:
    with FakeTei() as tei:
        async with running_embed(tei_settings(tei.url, query_cache_size=2)) as stub:
            first = await embed(stub, ["年假有几天？"], QUERY)
            again = await embed(stub, ["年假有几天？"], QUERY)
            assert np.array_equal(first, again)
            assert embed_batches(tei) == [["年假有几天？"]]
            await embed(stub, ["b"], QUERY)
            await embed(stub, ["c"], QUERY)  # evicts the first question
            await embed(stub, ["年假有几天？"], QUERY)
            await embed(stub, ["年假有几天？"], embed_pb2.EMBED_KIND_PASSAGE)  # passages: never cached
    assert embed_batches(tei) == [["年假有几天？"], ["b"], ["c"], ["年假有几天？"], ["年假有几天？"]]
