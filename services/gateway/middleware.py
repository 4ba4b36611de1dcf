"""Pure ASGI middleware: request ids, metrics, traces and access logs, access, body limit.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed answers pass through untouched and a
client disconnect still reaches the streaming response, which then cancels its gRPC call.
Order, outermost first: request id, metrics/traces/logs, CORS, access (keys, sessions, the
route table, rate limits), body limit and read timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import tracing
from services.common.logging import REQUEST_ID_HEADER, new_request_id, request_id_var
from services.common.metrics import HTTP_LATENCY, HTTP_REQUESTS
from services.gateway.access import CSRF_HEADER, SESSION_COOKIE, Access, Principal
from services.gateway.audit import AuditAction, AuditTrail
from services.gateway.authz import UNKNOWN_CALLER, AnyCaller, KnowledgeBaseGuard, acting_as
from services.gateway.errors import HttpApiError, error_response, rpc_error_body
from services.gateway.kb_guard import refusal_for
from services.gateway.names import kb_name_error
from services.gateway.permissions import UNLISTED, Match, Need, PermissionTable, Rule
from services.gateway.rate_limit import RateLimiter

access_log = logging.getLogger("zhiku.gateway.access")

# Incoming ids are echoed into logs and headers: accept only short, boring ones.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


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
    """Decides every request from the route table (:mod:`services.gateway.permissions`): who
    the caller is (API key or session cookie), CSRF for cookie writes, rate limits per key and
    per user, then the route's rule. The caller it establishes is what every knowledge-base
    check of the request is made for (:mod:`services.gateway.authz`); routes find it in
    ``request.state.principal``.

    Open (everything allowed, no principal) while no key and no user exist. Otherwise: 401
    without a known key or a live session, 403 for a cookie write without the CSRF token or a
    rule the caller does not meet, 429 with ``Retry-After`` past a limit. A knowledge base in
    the path that the caller may not see answers exactly like one that does not exist (the
    guard's own refusal), so a forbidden name tells nothing.
    """

    def __init__(
        self,
        app: ASGIApp,
        access: Access,
        guard: KnowledgeBaseGuard,
        audit: AuditTrail,
        table: PermissionTable | None = None,
    ) -> None:
        self.app = app
        self.access = access
        self.guard = guard
        self.audit = audit
        self.table = table or PermissionTable()

    @staticmethod
    def _token(headers: Headers) -> str:
        header = headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    async def _authenticate(self, scope: Scope) -> tuple[Principal | None, JSONResponse | None]:
        """The caller of the key or session presented, or the 401 to answer (for callers that
        need one: public routes ignore it)."""
        headers = Headers(scope=scope)
        token = self._token(headers)
        if token:
            principal = await self.access.principal(token)
            if principal is not None:
                return principal, None
            return None, _unauthenticated(
                scope, "missing or invalid API key: send 'Authorization: Bearer <key>'"
            )
        cookie = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        if cookie:
            principal = await self.access.session_principal(cookie)
            if principal is not None:
                return principal, None
            return None, _unauthenticated(
                scope, "your session has expired or was ended: sign in again", "session_expired"
            )
        return None, _unauthenticated(
            scope, "missing or invalid API key: send 'Authorization: Bearer <key>' or sign in"
        )

    async def _decide(self, scope: Scope) -> tuple[AnyCaller, JSONResponse | None]:
        """Who the request acts as, or the refusal to answer instead: its principal, None (an
        open gateway: anyone may do anything), or the unknown caller (an anonymous call of a
        public route, which must not reach a knowledge base: the guard refuses it)."""
        match = self.table.match(scope["method"], scope["path"])
        rule = UNLISTED if match is None else match.rule
        if await self.access.is_open():
            return None, None
        principal, unauthenticated = await self._authenticate(scope)
        if principal is None:
            return UNKNOWN_CALLER, None if rule.need is Need.PUBLIC else unauthenticated
        scope.setdefault("state", {})["principal"] = principal
        refusal = (
            _csrf_refusal(scope, principal, rule)
            or await self._over_limit(
                scope, principal, self._per_minute(principal), self.access.limiter, "minute"
            )
            or await self._refused_by_rule(scope, principal, rule, match)
        )
        if refusal is None and rule.upload and self.access.settings.uploads_per_day:
            refusal = await self._over_limit(
                scope, principal, self._per_day(principal), self.access.daily, "day"
            )
        return principal, refusal

    def _per_minute(self, principal: Principal) -> list[tuple[str, int, str]]:
        limits = []
        if principal.session is None and principal.rate_limit_per_minute:
            limits.append((principal.key_id, principal.rate_limit_per_minute, "rate limit"))
        if principal.user_id is not None and self.access.settings.user_rate_limit_per_minute:
            user_limit = self.access.settings.user_rate_limit_per_minute
            limits.append((f"user:{principal.user_id}", user_limit, "per-user rate limit"))
        return limits

    def _per_day(self, principal: Principal) -> list[tuple[str, int, str]]:
        limit = self.access.settings.uploads_per_day
        limits = [] if principal.session is not None else [(principal.key_id, limit, "upload limit")]
        if principal.user_id is not None:
            limits.append((f"user:{principal.user_id}", limit, "per-user upload limit"))
        return limits

    @staticmethod
    async def _over_limit(
        scope: Scope,
        principal: Principal,
        limits: list[tuple[str, int, str]],
        limiter: RateLimiter,
        period: str,
    ) -> JSONResponse | None:
        for bucket, limit, what in limits:
            wait = await limiter.retry_after(bucket, limit)
            if wait is not None:
                unit = "requests per minute" if period == "minute" else "uploads per day"
                return error_response(
                    429,
                    f"{what} of {limit} {unit} exceeded; retry in {wait} s",
                    "rate_limit_exceeded",
                    headers={"Retry-After": str(wait)},
                    path=scope["path"],
                )
        return None

    async def _refused_by_rule(
        self, scope: Scope, principal: Principal, rule: Rule, match: Match | None
    ) -> JSONResponse | None:
        route = f"{scope['method']} {_template(scope, match)}"
        if rule.need is Need.ADMIN and not principal.admin:
            return await self._denied(scope, principal, f"{route} needs an admin")
        if rule.need is Need.USER and principal.user_id is None and not principal.admin:
            return await self._denied(
                scope,
                principal,
                f"{route} needs an admin key, or a signed-in user (or a key of theirs); "
                "this key belongs to no user",
            )
        if rule.need is Need.KNOWLEDGE_BASE and match is not None and rule.permission is not None:
            name = match.params.get(rule.param, "")
            if kb_name_error(name) is None and not await self.guard.permits(principal, name, rule.permission):
                error = await refusal_for(self.guard, principal, name, rule.permission)
                status, body = rpc_error_body(error, path=scope["path"])
                return JSONResponse(body, status_code=status)
        return None

    async def _denied(self, scope: Scope, principal: Principal, message: str) -> JSONResponse:
        """403 on an admin route, audited: someone probing admin routes is worth a trace."""
        await self.audit.record(
            AuditAction.ACCESS_DENIED,
            request=Request(scope),
            actor=principal,
            outcome="denied",
            detail={"method": scope["method"], "path": scope["path"]},
        )
        return error_response(403, message, "admin_required", path=scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:  # outside FastAPI's handlers: a store failure (503) is answered here
            principal, refusal = await self._decide(scope)
        except HttpApiError as error:
            principal, refusal = (
                UNKNOWN_CALLER,
                error_response(error.status, error.message, error.code, error.param, path=scope["path"]),
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        with acting_as(principal):
            await self.app(scope, receive, send)


def _template(scope: Scope, match: Match | None) -> str:
    return scope["path"] if match is None else match.template


def _unauthenticated(scope: Scope, message: str, code: str = "invalid_api_key") -> JSONResponse:
    return error_response(401, message, code, headers={"WWW-Authenticate": "Bearer"}, path=scope["path"])


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _csrf_refusal(scope: Scope, principal: Principal, rule: Rule) -> JSONResponse | None:
    """A cookie-authenticated write must echo the session's CSRF token: another site can make
    the browser send the cookie, never read the token. Key callers need none."""
    if principal.session is None or scope["method"] in SAFE_METHODS or not rule.csrf:
        return None
    presented = Headers(scope=scope).get(CSRF_HEADER, "")
    if presented and hmac.compare_digest(presented.encode(), principal.session.csrf_token.encode()):
        return None
    return error_response(
        403,
        f"a signed-in request that changes something needs the {CSRF_HEADER} header "
        "(the csrf_token from sign-in or GET /v1/auth/me)",
        "csrf_failed",
        path=scope["path"],
    )


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
