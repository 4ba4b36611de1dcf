"""Which Qdrant failures are worth another try, and the tenacity policy that retries them.

A cluster answers UNAVAILABLE or 5xx while a node restarts, a shard moves or a leader is
elected, and a connection can be reset by a load balancer: those pass if the call is repeated
a moment later. A 4xx (a bad request, a missing collection, a rate limit) would fail the same
way again, so it is reported at once. Every call the backend repeats is idempotent: upserts
and deletes address points by id or filter, counts and searches only read, and a repeated
create_collection that finds the collection made is treated as the lost race it is.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import httpx
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from services.retrieve.config import RetrieveSettings

log = logging.getLogger("zhiku.retrieve.qdrant")

_SERVER_ERROR_HTTP = 500
# gRPC's counterparts of a 5xx or a dropped connection; RESOURCE_EXHAUSTED (429) is not one.
_TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
    }
)


def is_transient(error: BaseException) -> bool:
    """True for failures another attempt may cure: UNAVAILABLE and its kin, 5xx, timeouts and
    broken connections. Local mode raises only ValueError and friends, never transient."""
    if isinstance(error, UnexpectedResponse):
        return error.status_code is not None and error.status_code >= _SERVER_ERROR_HTTP
    if isinstance(error, grpc.RpcError):
        return error.code() in _TRANSIENT_GRPC
    # REST transport failures arrive wrapped (connect refused, read timeout, reset).
    if isinstance(error, ResponseHandlingException):
        return True
    return isinstance(error, httpx.TransportError | TimeoutError | asyncio.TimeoutError | ConnectionError)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "qdrant call failed, retrying",
        extra={"fields": {"attempt": state.attempt_number, "error": f"{type(error).__name__}: {error}"}},
    )


def retrying(settings: RetrieveSettings) -> AsyncRetrying:
    """The retry loop for one call: ``async for attempt in retrying(s): with attempt: ...``.
    The last failure is re-raised as itself, for the caller's error translation."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(settings.qdrant_retry_attempts),
        wait=wait_random_exponential(
            multiplier=settings.qdrant_retry_backoff_s, max=settings.qdrant_retry_backoff_max_s
        ),
        before_sleep=_log_retry,
        reraise=True,
    )
