"""Domain errors and the one table that maps them to gRPC status codes.

Backends raise these; the server interceptor turns them into status codes and the gateway
turns status codes into HTTP codes, so no handler picks a code by hand.
"""

from __future__ import annotations

import grpc


class ZhikuError(Exception):
    """Base of every error a caller should see with its message intact."""


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


def job_not_found(job_id: str) -> NotFound:
    """The one wording of an unknown job, shared like :func:`kb_not_found`."""
    return NotFound(f"job {job_id!r} does not exist")


class FailedPrecondition(ZhikuError):
    pass


class DependencyUnavailable(ZhikuError):
    """A service or store this call needs did not answer."""


class ResourceExhausted(ZhikuError):
    pass


GRPC_CODE_BY_ERROR: dict[type[ZhikuError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
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
