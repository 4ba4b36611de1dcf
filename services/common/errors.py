"""Domain errors and the one table that maps them to gRPC status codes.

Backends raise these; the server interceptor turns them into status codes and the gateway
turns status codes into HTTP codes, so no handler picks a code by hand.
"""

from __future__ import annotations

import math

import grpc

# Trailing metadata of an Overloaded refusal: whole seconds until a retry is worth it. The
# gateway turns it into the HTTP ``Retry-After`` header.
RETRY_AFTER_METADATA = "retry-after"
# gRPC's own server pushback (gRFC A6): a negative value tells the client's retry machinery
# (the channels' service config retries UNAVAILABLE) not to re-send the call by itself.
RETRY_PUSHBACK_METADATA = "grpc-retry-pushback-ms"


class ZhikuError(Exception):
    """Base of every error a caller should see with its message intact."""

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with the status, for errors that tell the caller more than a message."""
        return ()


class InvalidArgument(ZhikuError):
    pass


class NotFound(ZhikuError):
    pass


class AlreadyExists(ZhikuError):
    pass


def kb_not_found(name: str) -> NotFound:
    """The one wording of an unknown knowledge base: the ingest service answers it, and the
    gateway answers exactly the same for a name the caller may not use (no existence oracle)."""
    return NotFound(f"knowledge base {name!r} does not exist")


def file_not_found(kb: str, file_name: str) -> NotFound:
    """The one wording of an unknown file, shared like :func:`kb_not_found`: a file the caller
    may not read (its access list) is answered exactly so."""
    return NotFound(f"file {file_name!r} does not exist in knowledge base {kb!r}")


def job_not_found(job_id: str) -> NotFound:
    """The one wording of an unknown job, shared like :func:`kb_not_found`."""
    return NotFound(f"job {job_id!r} does not exist")


class FailedPrecondition(ZhikuError):
    pass


class DependencyUnavailable(ZhikuError):
    """A service or store this call needs did not answer."""


class ResourceExhausted(ZhikuError):
    pass


class Overloaded(ZhikuError):
    """Healthy but at capacity: this call cannot start soon enough; try again later.

    UNAVAILABLE (HTTP 503: "temporarily overloaded") rather than RESOURCE_EXHAUSTED (HTTP 429,
    the caller's own quota), with ``retry-after`` in the trailing metadata, and a pushback
    that keeps gRPC's automatic retries from re-queueing the call: the refusal must reach
    the client at once, which then decides whether to wait ``retry_after_s``.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up and at least 1 (HTTP's ``Retry-After`` takes integers)."""
        return str(max(1, math.ceil(self.retry_after_s)))

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((RETRY_AFTER_METADATA, self.retry_after_header), (RETRY_PUSHBACK_METADATA, "-1"))


# Overloaded comes before DependencyUnavailable: ERROR_BY_GRPC_CODE below keeps the last error
# of each code, so a caller that gets UNAVAILABLE back sees DependencyUnavailable.
GRPC_CODE_BY_ERROR: dict[type[ZhikuError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Overloaded: grpc.StatusCode.UNAVAILABLE,
    DependencyUnavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def grpc_code_for(error: BaseException) -> grpc.StatusCode:
    for error_type, code in GRPC_CODE_BY_ERROR.items():
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


ERROR_BY_GRPC_CODE: dict[grpc.StatusCode, type[ZhikuError]] = {
    code: error_type for error_type, code in GRPC_CODE_BY_ERROR.items()
}


def error_from_rpc(error: grpc.RpcError) -> ZhikuError:
    """Turn a failed call back into the domain error the remote side raised."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return DependencyUnavailable(error.details() or code.name)
    return ERROR_BY_GRPC_CODE.get(code, ZhikuError)(error.details() or code.name)
