"""Which backend service a failed call went to, so a 503 can name the service that is down.

A call to a service that is not listening fails with UNAVAILABLE and details such as "failed
to connect to all addresses; ... 127.0.0.1:50052: Connection refused": true, but a client
cannot tell which of four services that is. Each of the gateway's channels gets a
:func:`naming_interceptors` pair that marks the errors of its calls with the service's name
(the same exception object, status and details: handlers that inspect codes are unaffected);
:mod:`services.gateway.errors` puts the name in the message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

_ATTRIBUTE = "zhiku_backend"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def backend_of(error: grpc.RpcError) -> str | None:
    """The backend service a failed call went to, when one of its channels marked it."""
    return getattr(error, _ATTRIBUTE, None)


class _NameUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryUnaryCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> _Response:
        try:  # an inner interceptor may fail the call before it has a call object
            return await (await continuation(client_call_details, request))
        except grpc.aio.AioRpcError as error:
            setattr(error, _ATTRIBUTE, self.service)
            raise


class _NameStream(grpc.aio.UnaryStreamClientInterceptor):
    """For streams (Generate): errors surface while reading, so the responses pass through
    a generator; ``read()``, ``cancel()`` and status methods still reach the real call."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryStreamCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> AsyncIterator[_Response]:
        call = await continuation(client_call_details, request)
        return self._responses(call)

    async def _responses(self, call: Any) -> AsyncIterator[Any]:
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            setattr(error, _ATTRIBUTE, self.service)
            raise


def naming_interceptors(service: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that mark the errors of one service's channel with its name."""
    return [_NameUnary(service), _NameStream(service)]
