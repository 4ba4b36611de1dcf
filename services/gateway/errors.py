"""The one place that turns failures into HTTP responses, in OpenAI's error shape.

Services report failures as gRPC status codes; this module maps them to HTTP statuses with
one table, so no route picks a status by hand. Every error body is
``{"error": {"message", "type", "code", "param"}}``, which the ``openai`` SDK parses into its
``APIError`` subclasses. A service that refuses work it cannot start soon enough (the generate
service's bounded queue) answers UNAVAILABLE with a ``retry-after`` in its trailing metadata:
that becomes 503 with the same ``Retry-After`` header (which the ``openai`` SDK honours when it
retries a 503, twice by default).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.errors import RETRY_AFTER_METADATA
from services.gateway.backend_names import backend_of

log = logging.getLogger("zhiku.gateway.errors")

HTTP_STATUS_BY_GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Set on request.state by upload routes: there RESOURCE_EXHAUSTED means "too large", not "slow down".
UPLOAD_STATE_FLAG = "zhiku_upload"


def http_status_for(code: grpc.StatusCode, *, upload: bool = False) -> int:
    if upload and code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return 413
    return HTTP_STATUS_BY_GRPC.get(code, 500)


def error_type_for(status: int) -> str:
    """OpenAI's ``type`` values, so SDKs and dashboards classify our errors as theirs."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


_CODE_BY_STATUS = {
    400: "bad_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_argument",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "deadline_exceeded",
}


class HttpApiError(Exception):
    """An error raised by gateway code itself (not by a service), with its HTTP status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODE_BY_STATUS.get(status, "error")
        self.param = param


# Single sign-on (the OIDC login and callback routes): what went wrong -> status. A failed
# sign-in is the browser's or the provider's doing, never a server fault, except a provider
# that cannot be reached.
SSO_FAILURE_STATUS: dict[str, int] = {
    "sso_not_configured": 404,
    "invalid_next": 422,
    "state_mismatch": 400,
    "provider_error": 400,
    "access_denied": 403,
    "invalid_id_token": 401,
    "missing_claim": 422,
    "user_disabled": 403,
    "sign_up_closed": 403,
    "email_domain_refused": 403,
    "account_conflict": 409,
    "provider_unreachable": 502,
}


def sso_error(code: str, message: str) -> HttpApiError:
    """The error of a failed sign-in, its status from :data:`SSO_FAILURE_STATUS`."""
    return HttpApiError(SSO_FAILURE_STATUS[code], message, code=code)


# Where Chatchat's routes live: their clients read Chatchat's ``{code, msg, data}`` envelope,
# so errors there keep the HTTP status but take that shape.
CHATCHAT_PREFIXES = ("/knowledge_base/", "/chat/")


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None, *, path: str = ""
) -> dict[str, Any]:
    if path.startswith(CHATCHAT_PREFIXES):
        return {"code": status, "msg": message, "data": None}
    return {
        "error": {
            "message": message,
            "type": error_type_for(status),
            "code": code or _CODE_BY_STATUS.get(status, "error"),
            "param": param,
        }
    }


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    path: str = "",
) -> JSONResponse:
    """The error in the shape the route's clients parse (OpenAI's, or Chatchat's on its routes)."""
    return JSONResponse(
        error_body(status, message, code, param, path=path), status_code=status, headers=headers
    )


def rpc_error_body(
    error: grpc.RpcError, *, upload: bool = False, path: str = ""
) -> tuple[int, dict[str, Any]]:
    """Status and body for a failed gRPC call; also used for errors inside an SSE stream."""
    code: grpc.StatusCode = error.code()
    status = http_status_for(code, upload=upload)
    message = error.details() or code.name
    if code is grpc.StatusCode.UNAVAILABLE:
        service = backend_of(error)
        who = f"the {service} service" if service else "a backend service"
        message = f"{who} is unavailable: {message}"
    return status, error_body(status, message, code.name.lower(), path=path)


def rpc_error_headers(error: grpc.RpcError) -> dict[str, str]:
    """HTTP headers a failed call carries: ``Retry-After`` when the service sent one."""
    trailing = getattr(error, "trailing_metadata", None)  # every real call has it
    for key, value in (trailing() if trailing else None) or ():
        if key == RETRY_AFTER_METADATA and str(value).isdigit():
            return {"Retry-After": str(value)}
    return {}


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "form", "header")]
    return ".".join(parts)


def _message(item: dict[str, Any]) -> str:
    # pydantic prefixes messages of custom validators with "Value error, ": noise for clients.
    return str(item.get("msg", "invalid")).removeprefix("Value error, ")


async def _on_rpc_error(request: Request, error: grpc.RpcError) -> JSONResponse:
    upload = bool(getattr(request.state, UPLOAD_STATE_FLAG, False))
    status, body = rpc_error_body(error, upload=upload, path=request.url.path)
    if status >= 500:
        log.warning("backend call failed: %s", error.details(), extra={"fields": {"status": status}})
    return JSONResponse(body, status_code=status, headers=rpc_error_headers(error))


async def _on_api_error(request: Request, error: HttpApiError) -> JSONResponse:
    return error_response(error.status, error.message, error.code, error.param, path=request.url.path)


def _invalid_json(item: dict[str, Any]) -> str:
    """pydantic reports a body that does not parse with the character position as its location
    (``("body", 14)``): say that instead of presenting 14 as a field name."""
    position = next((part for part in item.get("loc", ()) if isinstance(part, int)), None)
    reason = (item.get("ctx") or {}).get("error") or "it does not parse"
    where = f" at character {position}" if position is not None else ""
    return f"the request body is not valid JSON: {reason}{where}"


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = error.errors()
    path = request.url.path
    broken = next((item for item in errors if item.get("type") == "json_invalid"), None)
    if broken is not None:
        return error_response(422, _invalid_json(broken), "invalid_json", "body", path=path)
    first = errors[0] if errors else {}
    param = _location(tuple(first.get("loc", ()))) or None
    message = "; ".join(
        f"{_location(tuple(item.get('loc', ()))) or 'body'}: {_message(item)}" for item in errors
    )
    return error_response(422, message or "invalid request", "invalid_argument", param, path=path)


async def _on_http_exception(request: Request, error: StarletteHTTPException) -> JSONResponse:
    detail: object = error.detail  # typed str, but FastAPI's HTTPException takes any detail
    message = detail if isinstance(detail, str) else str(detail)
    return error_response(error.status_code, message, headers=error.headers, path=request.url.path)


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error", path=request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; each is typed for the exception class it is registered for."""
    app.add_exception_handler(grpc.RpcError, _on_rpc_error)  # type: ignore[arg-type]
    app.add_exception_handler(HttpApiError, _on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)
