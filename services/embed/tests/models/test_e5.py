"""The bundled e5 model over real gRPC. Few texts: it is the slow one (~2-7 texts/s)."""

from __future__ import annotations

import numpy as np
import pytest

from services.embed.tests.conftest import embed, make_settings, running_embed
from zhiku.v1 import embed_pb2

pytestmark = pytest.mark.asyncio


async def test_e5_info_similarity_and_asymmetric_kinds() -> None:
    async with running_embed(make_settings(local_model="e5")) as stub:
        info = await stub.Info(embed_pb2.EmbedInfoRequest(), timeout=10)
        assert (info.backend, info.dimension) == ("local", 384)
        assert "e5" in info.model

        passages = await embed(stub, ["猫喜欢吃鱼。", "小猫爱吃鱼肉。", "股市今天暴跌。"])
        np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
        assert float(passages[0] @ passages[1]) > float(passages[0] @ passages[2])

        query = await embed(stub, ["猫喜欢吃什么？"], kind=embed_pb2.EMBED_KIND_QUERY)
        as_passage = await embed(stub, ["猫喜欢吃什么？"], kind=embed_pb2.EMBED_KIND_PASSAGE)
        # "query: " and "passage: " prefixes give different vectors for the same text...
        assert float(query[0] @ as_passage[0]) < 0.999
        # ...and the query finds the passage that answers it.
        scores = passages @ query[0]
        assert int(np.argmax(scores)) in (0, 1)
        assert scores[0] > scores[2]
