"""Pure ASGI middleware: request ids, metrics, traces and access logs, API keys, body limit.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed answers pass through untouched and a
client disconnect still reaches the streaming response, which then cancels its gRPC call.
Order, outermost first: request id, metrics/traces/logs, CORS, access (keys, rate limits),
body limit and read timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import tracing
from services.common.logging import REQUEST_ID_HEADER, new_request_id, request_id_var
from services.common.metrics import HTTP_LATENCY, HTTP_REQUESTS
from services.gateway.access import Access, Principal
from services.gateway.authz import acting_as
from services.gateway.errors import HttpApiError, error_response
from services.gateway.webui import is_ui_path

access_log = logging.getLogger("zhiku.gateway.access")

# Incoming ids are echoed into logs and headers: accept only short, boring ones.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Probes, scrapes and the API docs stay open even when API keys are configured.
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    # Single sign-on: the browser arrives with no credential yet; the callback issues one.
    | {"/v1/auth/oidc/login", "/v1/auth/oidc/callback"}
)


class RequestIdMiddleware:
    """Takes ``X-Request-ID`` (or makes one), puts it in the context for logs and gRPC
    metadata, and returns it on the response so a client can quote it in a bug report."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class MetricsMiddleware:
    """Counts and times requests by route template (bounded labels), logs each one, and wraps
    it in a SERVER span (child of an incoming ``traceparent``) that the gRPC calls it makes
    join through their metadata: one trace from the gateway through every service."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        span = tracing.tracer().start_span(
            scope["method"],
            context=tracing.extract(scope.get("headers")),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        )
        span_token = otel_context.attach(trace.set_span_in_context(span))

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_LATENCY.labels(route, method).observe(elapsed)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            otel_context.detach(span_token)
            span.end()
            access_log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": method,
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 1),
                    }
                },
            )


class AccessMiddleware:
    """API keys and per-key rate limits; the caller it establishes is what every knowledge-base
    check of the request is made for (:mod:`services.gateway.authz`).

    Open (everything allowed, no principal) while no key exists at all. Otherwise: 401 without
    a known key, 429 with ``Retry-After`` past the key's rate limit. Knowledge bases are not
    checked here: wherever a request names one, the name is checked when the gateway looks it
    up, so a forbidden name answers exactly like a missing one. Routes find the caller in
    ``request.state.principal``.
    """

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    @staticmethod
    def _token(scope: Scope) -> str:
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    async def _caller(self, scope: Scope) -> tuple[Principal | None, JSONResponse | None]:
        """The request's principal (None: open gateway), or the refusal to answer instead."""
        if await self.access.is_open():
            return None, None
        token = self._token(scope)
        principal = await self.access.principal(token) if token else None
        if principal is None:
            return None, error_response(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
                path=scope["path"],
            )
        scope.setdefault("state", {})["principal"] = principal
        if principal.rate_limit_per_minute:
            wait = await self.access.limiter.retry_after(principal.key_id, principal.rate_limit_per_minute)
            if wait is not None:
                return principal, error_response(
                    429,
                    f"rate limit of {principal.rate_limit_per_minute} requests per minute exceeded; "
                    f"retry in {wait} s",
                    "rate_limit_exceeded",
                    headers={"Retry-After": str(wait)},
                    path=scope["path"],
                )
        return principal, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in OPEN_PATHS
            or is_ui_path(scope["path"])  # the web UI page and assets; it asks for a key on 401
        ):
            await self.app(scope, receive, send)
            return
        try:  # outside FastAPI's handlers: a store failure (503) is answered here
            principal, refusal = await self._caller(scope)
        except HttpApiError as error:
            principal, refusal = (
                None,
                error_response(error.status, error.message, error.code, error.param, path=scope["path"]),
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        with acting_as(principal):
            await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit.

    An HTTPException, because FastAPI re-raises those from body parsing (anything else would
    become a generic 400), and its handler then answers 413 in the usual error shape.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit // (1024 * 1024)} MB")


class BodyTimedOut(HTTPException):
    """Raised from ``receive`` when the next piece of the body does not arrive in time (408)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"the request body stopped arriving: nothing received for {timeout_s:g} s")


class BodyLimitMiddleware:
    """Refuses bodies over the limit before reading them when Content-Length says so, stops
    reading a body without one (chunked) as soon as it passes the limit, and gives up on a
    body whose next piece takes longer than ``read_timeout_s`` (uvicorn has no such timeout:
    300 half-sent bodies held their connections for as long as the clients wished)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            error = BodyTooLarge(self.max_body_bytes)
            await error_response(413, error.detail, path=scope["path"])(scope, receive, send)
            return

        received = 0
        body_complete = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:  # later receives wait for the disconnect: as long as the answer lasts
                return await receive()
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise BodyTimedOut(self.read_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, BodyTimedOut) as error:
            # Normally FastAPI's handler has answered already; this covers plain routes.
            if started:
                raise
            await error_response(error.status_code, error.detail, path=scope["path"])(scope, receive, send)
