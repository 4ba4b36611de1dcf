"""The one server interceptor chain: request ids, traces, logs, metrics, deadlines, errors.

Wrapping the handlers here keeps servicers thin: they convert messages and call a backend,
raising :mod:`services.common.errors` exceptions that this layer maps to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import Token
from typing import Any, NoReturn, TypeVar, cast

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from services.common import tracing
from services.common.errors import ZhikuError, grpc_code_for
from services.common.logging import REQUEST_ID_HEADER, new_request_id, request_id_var
from services.common.metrics import GRPC_LATENCY, GRPC_REQUESTS

log = logging.getLogger("zhiku.grpc")

# Health and reflection calls are polled constantly; they would drown the request metrics.
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

# A servicer context as the wrapped handlers see it: requests and responses of any message type.
Context = grpc.aio.ServicerContext[Any, Any]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def _request_id_from(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)
    return new_request_id()


def _start_span(method: str, context: Context) -> tuple[trace.Span, Token[otel_context.Context]]:
    """A SERVER span for one call, child of the caller's ``traceparent``; made current."""
    service, _, name = method.lstrip("/").rpartition("/")
    span = tracing.tracer().start_span(
        method.lstrip("/"),
        context=tracing.extract(context.invocation_metadata()),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    return span, otel_context.attach(trace.set_span_in_context(span))


def _end_span(span: trace.Span, token: Token[otel_context.Context], code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
    otel_context.detach(token)
    span.end()


def _aborted_code(context: Context) -> grpc.StatusCode:
    """The code a handler aborted with; UNKNOWN if none was set (grpc.aio's ``code()`` returns
    None then, though its stubs promise a StatusCode)."""
    return cast("grpc.StatusCode | None", context.code()) or grpc.StatusCode.UNKNOWN


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Applies request-id propagation, logging, metrics, default deadlines and error mapping."""

    def __init__(self, service: str, default_timeout_s: float) -> None:
        self.service = service
        self.default_timeout_s = default_timeout_s

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_QUIET_PREFIXES):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _timeout(self, context: Context) -> float:
        # None when the call carries no deadline (grpc.aio does so; its stubs say float).
        remaining = cast("float | None", context.time_remaining())
        return self.default_timeout_s if remaining is None else max(remaining, 0.0)

    def _record(self, method: str, code: grpc.StatusCode, started: float) -> None:
        name = method.rsplit("/", 1)[-1]
        GRPC_REQUESTS.labels(self.service, name, code.name).inc()
        GRPC_LATENCY.labels(self.service, name).observe(time.perf_counter() - started)

    async def _fail(self, context: Context, method: str, error: BaseException) -> NoReturn:
        if isinstance(error, asyncio.TimeoutError):
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} ran past its deadline"
        else:
            code, message = grpc_code_for(error), str(error) or type(error).__name__
        trailing: tuple[tuple[str, str], ...] = ()
        if isinstance(error, ZhikuError):
            log.info("%s failed: %s", method, message, extra={"fields": {"code": code.name}})
            trailing = error.trailing_metadata()
        elif code is not grpc.StatusCode.DEADLINE_EXCEEDED:
            log.exception("%s crashed", method)
            message = f"internal error: {message}"
        await context.abort(code, message, trailing)

    def _wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(request: Any, context: Context) -> Any:
            token = request_id_var.set(_request_id_from(context))
            span, span_token = _start_span(method, context)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the handler in a
                # task of its own, one more task and loop turn on every call.
                async with asyncio.timeout(self._timeout(context)):
                    return await behavior(request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:  # every failure leaves as a mapped status
                if isinstance(error, grpc.aio.AbortError):
                    code = _aborted_code(context)
                    raise
                code = grpc_code_for(error)
                await self._fail(context, method, error)
            finally:
                self._record(method, code, started)
                _end_span(span, span_token, code)
                request_id_var.reset(token)

        return wrapped

    def _wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
            token = request_id_var.set(_request_id_from(context))
            span, span_token = _start_span(method, context)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                async for item in behavior(request, context):
                    yield item
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                if isinstance(error, grpc.aio.AbortError):
                    code = _aborted_code(context)
                    raise
                code = grpc_code_for(error)
                await self._fail(context, method, error)
            finally:
                self._record(method, code, started)
                _end_span(span, span_token, code)
                request_id_var.reset(token)

        return wrapped
