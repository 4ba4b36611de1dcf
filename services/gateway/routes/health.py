"""Probes and scrapes: ``/healthz`` (alive), ``/readyz`` (services reachable), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.gateway.deps import ClientsDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers while the event loop runs; never checks dependencies, so a
    dependency outage does not get the gateway restarted."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(clients: ClientsDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: every service answers its gRPC health check as SERVING."""
    services = await clients.health(settings.readyz_timeout_s)
    down = sorted(name for name, status in services.items() if status != "serving")
    if down:
        return JSONResponse({"status": "not_ready", "down": down, "services": services}, status_code=503)
    return JSONResponse({"status": "ready", "services": services})


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
