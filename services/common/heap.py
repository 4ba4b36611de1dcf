"""Keep the cyclic garbage collector's full scans off the request path.

A service holds tens to hundreds of thousands of long-lived objects by the time it serves (grpc,
protobuf, pydantic models, FastAPI routes, SQLAlchemy, numpy...). CPython rescans all of them
at every full (generation 2) collection, which in the gateway took 40-60 ms and in the
generate service about 15 ms; a collection falls due every few hundred requests, in the middle
of whichever request allocated last, and every stream in flight waits for it (measured with
``gc.callbacks`` during ``make bench-generate``'s bursts). Freezing once startup is over moves
those objects to the permanent generation: later collections scan only what requests
allocated, and cycles made while serving are still collected.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("zhiku.heap")
_frozen = False


def freeze_startup_heap() -> None:
    """Collect startup garbage, then exempt everything alive from future collections.

    Once per process: a service starts once; a test process starting many in-process
    servers would otherwise pay a full collection of its own large heap every time."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.debug(
        "froze %d startup objects in %.1f ms", gc.get_freeze_count(), (time.perf_counter() - started) * 1000
    )
