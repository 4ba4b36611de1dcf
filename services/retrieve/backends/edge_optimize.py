"""Child process that builds the index of one edge shard copy and prints a JSON report.

The retrieve service runs ``python -m services.retrieve.backends.edge_optimize PATH`` because
the engine's ``optimize()`` holds the GIL for its whole run: inside the service it would
freeze every RPC. Only ``qdrant_edge`` is imported here, to keep the start cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

from services.common.lifetime import die_with_parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", help="shard directory (a copy nobody else has open)")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit with this process")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        # Never outlive the retrieve process: a build nobody will swap in is wasted CPU.
        die_with_parent(signal.SIGKILL, expected_parent=args.parent_pid)
    if args.nice:
        os.nice(args.nice)

    from qdrant_edge import EdgeShard

    started = time.perf_counter()
    shard = EdgeShard.load(args.path)
    try:
        optimized = shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    report = {
        "optimized": optimized,
        "points": info.points_count,
        "indexed": info.indexed_vectors_count,
        "segments": info.segments_count,
        "seconds": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
