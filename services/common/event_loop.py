"""Run a service's main coroutine on uvloop when it is installed, else on asyncio's own loop.

Every service is a Python process relaying small messages (gRPC calls, HTTP requests, SSE
chunks), so per-message event-loop overhead is a large part of what the stack adds to a
request; uvloop (libuv) trims it. uvicorn already picks uvloop by itself for the
gateway when it is installed; this does the same for the gRPC services. grpc.aio runs on any
asyncio-compatible loop. ``ZHIKU_EVENT_LOOP=asyncio`` keeps the standard loop (for debugging
or for a platform without uvloop wheels).

Measured on the 2-core VM (``make bench-generate``, same run length, uvloop and httptools
installed or not): CPU per 1,000 streamed tokens generate 134 -> 113 ms, gateway 145 -> 127
ms; gateway search p50 at 10k chunks 8.6-9.1 -> 7.6-8.2 ms (three alternating runs each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """``main`` to completion on a new loop; ``event_loop`` is ``CommonSettings.event_loop``."""
    if event_loop == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
