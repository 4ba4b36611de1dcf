"""The bundled e5 model over real gRPC, and how its threads wait. Few texts: it is the slow one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from services.embed.tests.conftest import embed, make_settings, running_embed
from zhiku.v1 import embed_pb2


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


IDLE_CPU_PROBE = """
import resource, sys, time
from services.embed.domain import EmbedKind
from services.embed.models.e5 import E5Encoder

encoder = E5Encoder(threads=2, spin_wait=sys.argv[1] == "spin")
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
idle = 0.0
for _ in range(10):
    encoder.encode(["年假有几天？"], EmbedKind.QUERY)
    before = cpu()
    time.sleep(0.05)
    idle += cpu() - before
print(idle / 0.5)
"""


def test_e5_threads_sleep_between_calls_unless_spin_wait_is_asked() -> None:
    # A fresh process each: libgomp reads its wait policy once, when the engine loads.
    root = Path(__file__).resolve().parents[4]
    env = {**os.environ, "PYTHONPATH": f"{root / 'protos'}:{root}"}
    env.pop("OMP_WAIT_POLICY", None)

    def idle_share(mode: str) -> float:
        probe = [sys.executable, "-c", IDLE_CPU_PROBE, mode]
        return float(subprocess.run(probe, env=env, check=True, capture_output=True, text=True).stdout)

    # Share of the idle time after each call spent on the CPU: spinning threads burn it
    # (libgomp's default, ~20% of a core here), sleeping ones do not.
    assert idle_share("sleep") < 0.03
    assert idle_share("spin") > idle_share("sleep")
