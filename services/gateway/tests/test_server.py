"""``python -m services.gateway.server``: the real entry point, as ``make run`` starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from .support import dead_address, free_port


def test_server_serves_json_logs_and_stops_on_sigterm(tmp_path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ZHIKU_GATEWAY_PORT": str(port),
        "ZHIKU_LOG_JSON": "true",
        "ZHIKU_DATA_DIR": str(tmp_path),
        **{f"ZHIKU_{name}_ADDR": dead_address() for name in ("EMBED", "RETRIEVE", "GENERATE", "INGEST")},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.gateway.server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": "srv-1"})
                break
            except httpx.TransportError:
                assert process.poll() is None, "gateway exited during startup"
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        assert response.status_code == 200  # type: ignore[possibly-undefined]  # set before the break
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    # Uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit too.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(e["msg"] == "Application shutdown complete." for e in entries), stderr
    access = [e for e in entries if e.get("logger") == "zhiku.gateway.access" and e.get("path") == "/healthz"]
    assert access and access[0]["request_id"] == "srv-1"
    assert access[0]["status"] == 200 and access[0]["service"] == "gateway"
