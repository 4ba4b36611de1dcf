"""TEMPORARY placeholder until identity-core's store is merged."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway.oidc.flow import FinishedFlow


async def sign_in(request: Request, finished: FinishedFlow) -> Response:
    identity = finished.identity
    return JSONResponse(
        {"email": identity.email, "groups": sorted(identity.provider_groups), "next": finished.next_path}
    )
