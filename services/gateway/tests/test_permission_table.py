"""The route permission table itself: every route of the app has a rule (generated from
``app.routes`` and the OpenAPI schema, so a new route without one fails here, and the app
refuses to start), and the table judges a request by the route the router serves it with."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from services.gateway.access import Access, Principal
from services.gateway.app import create_app
from services.gateway.audit import AuditTrail
from services.gateway.authz import KnowledgeBaseGuard, current_caller
from services.gateway.config import GatewaySettings
from services.gateway.middleware import AccessMiddleware
from services.gateway.permissions import ANY, PUBLIC, ROUTES, PermissionTable, app_routes, unlisted_routes


def test_every_route_has_a_rule() -> None:
    """Generated from the app itself: a route added without a rule fails here (and the app
    refuses to start); the schema's operations are checked on their own as well."""
    app = create_app(GatewaySettings())
    assert unlisted_routes(app) == []
    served = set(app_routes(app))
    missing = [
        f"{method.upper()} {path}"
        for path, methods in app.openapi()["paths"].items()
        for method in methods
        if (method.upper(), path) not in ROUTES
    ]
    assert missing == []
    assert ("*", "/mcp") in served and ("GET", "/v1/auth/me") in served
    planned = {  # contract routes other parts of the identity work add (their own branches)
        ("GET", "/v1/auth/oidc/login"),
        ("GET", "/v1/auth/oidc/callback"),
        ("GET", "/v1/knowledge_bases/{kb}/files/{file_name}/access"),
        ("PUT", "/v1/knowledge_bases/{kb}/files/{file_name}/access"),
    }
    assert set(ROUTES) - served <= planned


def test_an_unlisted_route_stops_the_app() -> None:
    app = create_app(GatewaySettings())

    @app.get("/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {}

    assert unlisted_routes(app) == ["GET /v1/forgotten"]


def test_the_table_finds_the_route_the_router_serves() -> None:
    """For every route, a concrete path (its parameters filled in) maps back to its own
    template: the table never judges a request by another route's rule."""
    table = PermissionTable()
    app = create_app(GatewaySettings())
    for method, template in app_routes(app):
        path = re.sub(r"\{[^}]+\}", "x1", template)
        found = table.match("GET" if method == "*" else method, path)
        assert found is not None and found.template == template, (method, template, found)
    asset = table.match("GET", "/ui/assets/app.js")
    files = table.match("GET", "/v1/knowledge_bases/a/files")
    assert asset is not None and asset.template == "/ui"
    assert files is not None and files.params == {"kb": "a"}
    assert table.match("GET", "/no/such/route") is None


def test_anonymous_public_calls_act_as_nobody_and_callers_as_themselves() -> None:
    """A public route called without credentials runs as the unknown caller, whom the guard
    refuses everything (never as the gateway itself, which may do anything)."""

    async def who(request: Request) -> PlainTextResponse:
        caller = current_caller()
        return PlainTextResponse(repr(caller) if not isinstance(caller, Principal) else caller.key_id)

    settings = GatewaySettings(api_keys=["root-key"])
    table = PermissionTable({("GET", "/probe"): PUBLIC, ("GET", "/private"): ANY})
    inner = Starlette(routes=[Route("/probe", who), Route("/private", who)])
    app = AccessMiddleware(inner, Access(settings), KnowledgeBaseGuard(), AuditTrail(), table)
    with TestClient(app) as client:
        assert client.get("/probe").text == "UNKNOWN_CALLER"
        assert client.get("/probe", headers={"Authorization": "Bearer wrong"}).text == "UNKNOWN_CALLER"
        assert client.get("/probe", headers={"Authorization": "Bearer root-key"}).text == "env-0"
        assert client.get("/private").status_code == 401
        assert client.get("/private", headers={"Authorization": "Bearer root-key"}).text == "env-0"
