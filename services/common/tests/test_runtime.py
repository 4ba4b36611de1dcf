"""Process-level runtime choices: the event loop (uvloop) and the frozen startup heap.

Each check runs in a fresh interpreter: both are process-wide, and the pytest process must
keep its own loop and heap."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_python(code: str, **env: str) -> str:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIKU_")} | env
    child_env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "protos")])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


GRPC_ON_LOOP = """
    import asyncio

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from services.common.config import CommonSettings
    from services.common.event_loop import run_event_loop


    async def main() -> str:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        await server.stop(None)
        loop = type(asyncio.get_running_loop())
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"{loop.__module__}.{loop.__name__} {status}"


    print(run_event_loop(main(), CommonSettings().event_loop))
"""


def test_services_run_grpc_aio_on_uvloop_by_default() -> None:
    assert run_python(GRPC_ON_LOOP) == "uvloop.Loop SERVING"


def test_zhiku_event_loop_asyncio_keeps_the_standard_loop() -> None:
    out = run_python(GRPC_ON_LOOP, ZHIKU_EVENT_LOOP="asyncio")
    assert out.split()[1] == "SERVING"
    assert not out.startswith("uvloop"), out


def test_frozen_startup_heap_is_skipped_by_collections_yet_new_cycles_are_collected() -> None:
    out = run_python(
        """
        import gc
        import weakref

        from services.common.heap import freeze_startup_heap

        import grpc, pydantic, fastapi  # a service's long-lived objects

        assert gc.get_freeze_count() == 0
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        freeze_startup_heap()  # once per process: a second call changes nothing
        assert gc.get_freeze_count() == frozen


        class Node:
            pass


        node = Node()
        node.self = node  # a reference cycle made while serving
        alive = weakref.ref(node)
        del node
        gc.collect()
        print(frozen, alive() is None)
        """
    )
    frozen, collected = out.split()
    assert int(frozen) > 20_000  # the imports' objects are out of every later full scan
    assert collected == "True"
