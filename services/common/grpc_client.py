"""Client channels with the stack's conventions: request ids, deadlines, retries, limits.

Retries live in the channel's service config (gRPC's own retry machinery), applied to
UNAVAILABLE only, which gRPC raises before a request reached the server's handler or when
the server is restarting; idempotent reads therefore survive a rolling restart.

Reconnect attempts back off to at most ``MAX_RECONNECT_BACKOFF_MS``. gRPC's default cap is
120 s, and a channel fails calls fast without trying to connect while it waits, so a client
that saw its server down for 30 s went on failing for up to 11 s after the server was back
(measured); two seconds between attempts to one address costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc

from services.common import tracing
from services.common.grpc_server import channel_options
from services.common.logging import REQUEST_ID_HEADER, current_request_id, new_request_id

MAX_RECONNECT_BACKOFF_MS = 2000

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def _service_config(service_names: Sequence[str]) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": name} for name in service_names],
                    "retryPolicy": {
                        "maxAttempts": 4,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def _options(service_names: Sequence[str], max_message_mb: int) -> list[tuple[str, str | int]]:
    return [
        *channel_options(max_message_mb),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(service_names)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


def request_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that carries the current request id (a fresh one outside any request) and the
    current span's W3C ``traceparent``, so the server's span joins the caller's trace."""
    return ((REQUEST_ID_HEADER, current_request_id() or new_request_id()), *tracing.inject().items())


def _with_request_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if metadata.get(REQUEST_ID_HEADER) is None:
        metadata.add(REQUEST_ID_HEADER, current_request_id() or new_request_id())
    for key, value in tracing.inject().items():
        if metadata.get(key) is None:
            metadata.add(key, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# grpc.aio files an interceptor under one call type only, so each type needs its own class.
class _UnaryRequestId(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryUnaryCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> grpc.aio.UnaryUnaryCall[_Request, _Response]:
        return await continuation(_with_request_id(client_call_details), request)


class _StreamRequestId(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryStreamCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> grpc.aio.UnaryStreamCall[_Request, _Response]:
        return await continuation(_with_request_id(client_call_details), request)


def aio_channel(
    address: str,
    service_names: Sequence[str],
    max_message_mb: int = 256,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A long-lived asyncio channel: create once per process, share between requests.

    ``interceptors`` run outermost, before the request-id ones: they see each call's final
    outcome, after gRPC's own retries.
    """
    return grpc.aio.insecure_channel(
        address,
        options=_options(service_names, max_message_mb),
        interceptors=[*interceptors, _UnaryRequestId(), _StreamRequestId()],
    )


def sync_channel(address: str, service_names: Sequence[str], max_message_mb: int = 256) -> grpc.Channel:
    """A blocking channel for synchronous callers (Celery tasks); pass request_metadata()."""
    return grpc.insecure_channel(address, options=_options(service_names, max_message_mb))
