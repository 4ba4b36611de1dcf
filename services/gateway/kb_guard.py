"""Enforcement of :mod:`services.gateway.authz` at the gRPC boundary: every RPC the gateway
sends to the ingest and retrieve services is checked against the caller before it leaves.

The table below says, for each RPC, where the knowledge base it concerns is named and which
permission it needs. An ingest or retrieve RPC missing from the table (the worker's writes:
``Upsert``, ``EnsureCollection``...) is refused to everyone but the gateway itself, so a new RPC
is closed until someone decides its rule; health checks pass. Refusals are raised as the
``AioRpcError`` the service would have sent for an unknown name, with the service's own
wording, so every route (native, OpenAI, Chatchat) answers a forbidden name exactly as it
answers a missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from services.common.errors import job_not_found, kb_not_found
from services.common.service_names import INGEST_SERVICE, RETRIEVE_SERVICE
from services.gateway.authz import (
    GATEWAY,
    ROLE_FOR,
    AnyCaller,
    KnowledgeBaseGuard,
    Permission,
    current_caller,
)
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc


@dataclass(frozen=True)
class NamedInRequest:
    """The request's ``field`` is the knowledge base's name."""

    field: str
    permission: Permission


@dataclass(frozen=True)
class JobInRequest:
    """The request names a job by id; its knowledge base is looked up (through this guard)."""

    permission: Permission


@dataclass(frozen=True)
class JobInReply:
    """The reply is a job: shown only if the caller may view its knowledge base."""

    permission: Permission


@dataclass(frozen=True)
class Listing:
    """The reply lists knowledge bases: filtered to those the caller may see."""


Rule = NamedInRequest | JobInRequest | JobInReply | Listing


def _methods(service: str, rules: dict[str, Rule]) -> dict[str, Rule]:
    return {f"/{service}/{name}": rule for name, rule in rules.items()}


# Methods of these services are checked; others on the same channels (health) pass.
GUARDED_PREFIXES = (f"/{INGEST_SERVICE}/", f"/{RETRIEVE_SERVICE}/")
VIEW, EDIT, MANAGE, CREATE = Permission.VIEW, Permission.EDIT, Permission.MANAGE, Permission.CREATE

RULES: dict[str, Rule] = {
    **_methods(
        INGEST_SERVICE,
        {
            "CreateKnowledgeBase": NamedInRequest("name", CREATE),
            "GetKnowledgeBase": NamedInRequest("name", VIEW),
            "ListKnowledgeBases": Listing(),
            "DeleteKnowledgeBase": NamedInRequest("name", MANAGE),
            "MigrateKnowledgeBase": NamedInRequest("knowledge_base", MANAGE),
            "SubmitFile": NamedInRequest("knowledge_base", EDIT),
            "ReindexFile": NamedInRequest("knowledge_base", EDIT),
            "DeleteFile": NamedInRequest("knowledge_base", EDIT),
            "ListFiles": NamedInRequest("knowledge_base", VIEW),
            "GetFileContent": NamedInRequest("knowledge_base", VIEW),
            "ListJobs": NamedInRequest("knowledge_base", VIEW),
            "GetJob": JobInReply(VIEW),
            "CancelJob": JobInRequest(EDIT),
            # A source decides what the knowledge base holds: changing or syncing one is editing.
            "CreateSource": NamedInRequest("knowledge_base", EDIT),
            "ListSources": NamedInRequest("knowledge_base", VIEW),
            "DeleteSource": NamedInRequest("knowledge_base", EDIT),
            "SyncSource": NamedInRequest("knowledge_base", EDIT),
            "GetSyncReport": NamedInRequest("knowledge_base", VIEW),
        },
    ),
    **_methods(
        RETRIEVE_SERVICE,
        {
            "Search": NamedInRequest("collection", VIEW),
            "Stats": NamedInRequest("collection", VIEW),
        },
    ),
}


CREATE_KB = f"/{INGEST_SERVICE}/CreateKnowledgeBase"
DELETE_KB = f"/{INGEST_SERVICE}/DeleteKnowledgeBase"


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def refusal(name: str, permission: Permission) -> grpc.aio.AioRpcError:
    """What a forbidden name gets: "does not exist", except for creating it, which is refused
    as such (whether or not the name exists, so that says nothing either)."""
    if permission is Permission.CREATE:
        return rpc_error(
            grpc.StatusCode.PERMISSION_DENIED, f"this API key may not create knowledge base {name!r}"
        )
    return rpc_error(grpc.StatusCode.NOT_FOUND, str(kb_not_found(name)))


async def refusal_for(
    guard: KnowledgeBaseGuard, caller: AnyCaller, name: str, permission: Permission
) -> grpc.aio.AioRpcError:
    """The refusal of a name the caller may not ``permission``: a caller who may view it knows
    it exists and is told their role falls short (403); anyone else gets :func:`refusal`."""
    viewable = permission in ROLE_FOR and permission is not Permission.VIEW
    if viewable and await guard.permits(caller, name, Permission.VIEW):
        return rpc_error(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this needs the {ROLE_FOR[permission].label} role on knowledge base {name!r}",
        )
    return refusal(name, permission)


class KnowledgeBaseGuardInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Installed on the gateway's ingest and retrieve channels (see ``ServiceClients.connect``)."""

    def __init__(self, guard: KnowledgeBaseGuard) -> None:
        self.guard = guard
        # The guarded ingest stub, for the job lookups of JobInRequest; set once it exists.
        self.ingest: ingest_pb2_grpc.IngestServiceStub | None = None

    # One interceptor for every guarded method: requests and replies are the methods' messages,
    # read by field name (the rules say which), hence Any.
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        raw: str | bytes = client_call_details.method  # typed str; grpc.aio passes bytes
        method = raw.decode() if isinstance(raw, bytes) else raw
        if not method.startswith(GUARDED_PREFIXES):
            return await continuation(client_call_details, request)
        rule = RULES.get(method)
        caller = current_caller()
        if isinstance(rule, Listing):  # file chats stay hidden even from an open gateway's callers
            reply = await (await continuation(client_call_details, request))
            shown = set(await self.guard.visible(caller, [kb.name for kb in reply.knowledge_bases]))
            return ingest_pb2.ListKnowledgeBasesResponse(
                knowledge_bases=[kb for kb in reply.knowledge_bases if kb.name in shown]
            )
        if caller is GATEWAY:
            return await continuation(client_call_details, request)
        if isinstance(rule, NamedInRequest):
            name = getattr(request, rule.field)
            if not await self.guard.permits(caller, name, rule.permission):
                raise await refusal_for(self.guard, caller, name, rule.permission)
            if rule.permission not in (CREATE, MANAGE):
                return await continuation(client_call_details, request)
            reply = await (await continuation(client_call_details, request))
            # Ownership follows the catalog: the creator owns, a deleted name loses its grants.
            if method == CREATE_KB:
                await self.guard.created(caller, name)
            elif method == DELETE_KB:
                await self.guard.deleted(name)
            return reply
        if isinstance(rule, JobInRequest):
            await self._job(request.id, rule.permission, client_call_details.timeout)
            return await continuation(client_call_details, request)
        if isinstance(rule, JobInReply):
            job = await (await continuation(client_call_details, request))
            if not await self.guard.permits(caller, job.knowledge_base, rule.permission):
                raise rpc_error(grpc.StatusCode.NOT_FOUND, str(job_not_found(request.id)))
            return job
        raise rpc_error(
            grpc.StatusCode.PERMISSION_DENIED, f"{method} is not callable on behalf of an API key"
        )

    async def _job(self, job_id: str, permission: Permission, timeout: float | None) -> None:
        """The job must be one the caller may ``permission``; unknown and hidden alike 404."""
        if self.ingest is None:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the gateway's ingest client is not ready")
        job = await self.ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=timeout)
        if not await self.guard.permits(current_caller(), job.knowledge_base, permission):
            raise rpc_error(grpc.StatusCode.NOT_FOUND, str(job_not_found(job_id)))
