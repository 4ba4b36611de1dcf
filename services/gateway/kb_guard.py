"""Enforcement of :mod:`services.gateway.authz` at the gRPC boundary: every RPC the gateway
sends to the ingest and retrieve services is checked against the caller before it leaves.

The table below says, for each RPC, where the knowledge base it concerns is named and which
permission it needs. An ingest or retrieve RPC missing from the table (the worker's writes:
``Upsert``, ``EnsureCollection``...) is refused to everyone but the gateway itself, so a new RPC
is closed until someone decides its rule; health checks pass. Refusals are raised as the
``AioRpcError`` the service would have sent for an unknown name, with the service's own
wording, so every route (native, OpenAI, Chatchat) answers a forbidden name exactly as it
answers a missing one.

Document access lists are enforced here too, for callers who do not see every document of
the knowledge base (:meth:`KnowledgeBaseGuard.sees_every_document`): every ``Search`` carries
the caller's reader tokens (:func:`~services.gateway.authz.reader_acl`) with ``enforce_acl``,
so search, chat, ``kb:`` models, Chatchat routes, agent tools and MCP all filter inside the
vector query without a line of their own; file listings drop files the caller may not read,
and an RPC naming such a file is answered as for a missing file. Uploads carry the caller's
user id, which a restricted list always keeps. A search names the knowledge base it reads
apart from the collection (a migrated one's is ``<kb>__v<n>``): both the role and the reader
tokens are the knowledge base's, so no search needs to run as the gateway itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from services.common.errors import file_not_found, job_not_found, kb_not_found
from services.common.names import is_collection_of
from services.common.service_names import INGEST_SERVICE, RETRIEVE_SERVICE
from services.gateway.access import Principal
from services.gateway.authz import (
    GATEWAY,
    ROLE_FOR,
    AnyCaller,
    KnowledgeBaseGuard,
    Permission,
    acting_as,
    current_caller,
    may_read,
    reader_acl,
)
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc


@dataclass(frozen=True)
class NamedInRequest:
    """The request's ``field`` is the knowledge base's name."""

    field: str
    permission: Permission


@dataclass(frozen=True)
class FileInRequest:
    """The request names a knowledge base and one of its files (``file_name``): the caller
    needs ``permission`` on the knowledge base and must be able to read the file."""

    field: str
    permission: Permission


@dataclass(frozen=True)
class Upload(FileInRequest):
    """An upload: like FileInRequest (a file the caller may not read cannot be replaced), and
    the request records the caller as the file's uploader."""


@dataclass(frozen=True)
class UploadBatch:
    """SubmitFiles: every file (``files``) goes to one knowledge base, on which the caller
    needs ``permission``; each file is checked and recorded as an Upload is."""

    permission: Permission


@dataclass(frozen=True)
class FilesListing(NamedInRequest):
    """The reply lists a knowledge base's files: those the caller may not read are dropped."""


@dataclass(frozen=True)
class JobsListing(NamedInRequest):
    """The reply lists a knowledge base's jobs: those of files the caller may not read are
    dropped (their names would tell the files exist)."""


@dataclass(frozen=True)
class Searching(NamedInRequest):
    """A search: the caller's reader tokens go with it (enforced unless it sees every document).

    ``field`` names the collection searched; the knowledge base it serves is the request's
    ``knowledge_base`` (a migrated knowledge base's collection is ``<kb>__v<n>``, on which no
    one holds a role), else the collection's own name. Access, document access included, is
    decided on the knowledge base, and the collection must be one of its names."""


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


Rule = NamedInRequest | FileInRequest | UploadBatch | JobInRequest | JobInReply | Listing


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
            "SubmitFile": Upload("knowledge_base", EDIT),
            "SubmitFiles": UploadBatch(EDIT),
            "ReindexFile": FileInRequest("knowledge_base", EDIT),
            "DeleteFile": FileInRequest("knowledge_base", EDIT),
            "ListFiles": FilesListing("knowledge_base", VIEW),
            "GetFile": FileInRequest("knowledge_base", VIEW),
            "GetFileContent": FileInRequest("knowledge_base", VIEW),
            # Changing who may read a file is editing (and the editor must be able to read it).
            "SetFileAccess": FileInRequest("knowledge_base", EDIT),
            "ListJobs": JobsListing("knowledge_base", VIEW),
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
            "Search": Searching("collection", VIEW),
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


def _knowledge_base(rule: NamedInRequest | FileInRequest, request: Any) -> str:
    """The knowledge base the request concerns (see :class:`Searching` for searches)."""
    named: str = getattr(request, rule.field)
    if not isinstance(rule, Searching) or not request.knowledge_base:
        return named
    kb: str = request.knowledge_base
    if not is_collection_of(kb, named):
        # Never from the gateway's own requests: refused rather than searched on kb's rights.
        raise rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"collection {named!r} is not a collection of knowledge base {kb!r}",
        )
    return kb


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
        if isinstance(rule, NamedInRequest | FileInRequest):
            name = _knowledge_base(rule, request)
            if not await self.guard.permits(caller, name, rule.permission):
                raise await refusal_for(self.guard, caller, name, rule.permission)
            if rule.permission in (CREATE, MANAGE):
                reply = await (await continuation(client_call_details, request))
                # Ownership follows the catalog: the creator owns, a deleted name loses its grants.
                if method == CREATE_KB:
                    await self.guard.created(caller, name)
                elif method == DELETE_KB:
                    await self.guard.deleted(name)
                return reply
            if isinstance(caller, Principal):  # always, once permitted: not GATEWAY, not unknown
                return await self._documents(rule, caller, name, continuation, client_call_details, request)
            return await continuation(client_call_details, request)
        if isinstance(rule, UploadBatch):
            await self._upload_batch(rule, caller, request, client_call_details.timeout)
            return await continuation(client_call_details, request)
        if isinstance(rule, JobInRequest):
            await self._job(request.id, rule.permission, client_call_details.timeout)
            return await continuation(client_call_details, request)
        if isinstance(rule, JobInReply):
            job = await (await continuation(client_call_details, request))
            if not await self.guard.permits(caller, job.knowledge_base, rule.permission) or (
                isinstance(caller, Principal)
                and job.file_name  # a migration's job concerns no file
                and not await self.guard.sees_every_document(caller, job.knowledge_base)
                and await self._readable(
                    caller, job.knowledge_base, job.file_name, client_call_details.timeout
                )
                is False
            ):
                raise rpc_error(grpc.StatusCode.NOT_FOUND, str(job_not_found(request.id)))
            return job
        raise rpc_error(
            grpc.StatusCode.PERMISSION_DENIED, f"{method} is not callable on behalf of an API key"
        )

    async def _documents(
        self,
        rule: NamedInRequest | FileInRequest,
        caller: Principal,
        name: str,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]
        ],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Document access for a caller allowed on the knowledge base ``name``."""
        if isinstance(rule, Upload):
            request.uploader = caller.user_id or ""
        if not isinstance(rule, FileInRequest | FilesListing | JobsListing | Searching):
            return await continuation(details, request)
        unrestricted = await self.guard.sees_every_document(caller, name)
        if isinstance(rule, Searching):
            del request.reader_acl[:]
            request.enforce_acl = not unrestricted
            if not unrestricted:
                request.reader_acl.extend(reader_acl(caller))
        elif isinstance(rule, FileInRequest) and not unrestricted:
            await self._file(caller, name, request.file_name, rule, details.timeout)
        elif isinstance(rule, FilesListing) and not unrestricted:
            reply = await (await continuation(details, request))
            return ingest_pb2.ListFilesResponse(
                files=[info for info in reply.files if may_read(caller, info.access)]
            )
        elif isinstance(rule, JobsListing) and not unrestricted:
            reply = await (await continuation(details, request))
            hidden = await self._hidden_files(caller, name, details.timeout)
            return ingest_pb2.ListJobsResponse(
                jobs=[job for job in reply.jobs if job.file_name not in hidden]
            )
        return await continuation(details, request)

    async def _upload_batch(
        self, rule: UploadBatch, caller: AnyCaller, request: Any, timeout: float | None
    ) -> None:
        """SubmitFiles: one knowledge base the caller may edit, no file it may not read (one
        listing for the whole batch, not a lookup per file), each file's uploader recorded."""
        names = {file.knowledge_base for file in request.files}
        if len(names) != 1:
            raise rpc_error(
                grpc.StatusCode.INVALID_ARGUMENT, "the files of one upload must go to one knowledge base"
            )
        name = names.pop()
        if not await self.guard.permits(caller, name, rule.permission):
            raise await refusal_for(self.guard, caller, name, rule.permission)
        if not isinstance(caller, Principal):
            return
        for file in request.files:
            file.uploader = caller.user_id or ""
        if await self.guard.sees_every_document(caller, name):
            return
        hidden = await self._hidden_files(caller, name, timeout)
        blocked = next((file.file_name for file in request.files if file.file_name in hidden), None)
        if blocked is not None:
            raise rpc_error(
                grpc.StatusCode.PERMISSION_DENIED,
                f"file {blocked!r} in knowledge base {name!r} has an access list without this caller: "
                "it cannot be replaced by this caller",
            )

    async def _file(
        self, caller: Principal, kb: str, file_name: str, rule: FileInRequest, timeout: float | None
    ) -> None:
        """A file the caller may not read is answered as missing (an upload over it refused);
        a missing one is left for the service to answer."""
        if await self._readable(caller, kb, file_name, timeout) is not False:
            return
        if isinstance(rule, Upload):
            raise rpc_error(
                grpc.StatusCode.PERMISSION_DENIED,
                f"file {file_name!r} in knowledge base {kb!r} has an access list without this caller: "
                "it cannot be replaced by this caller",
            )
        raise rpc_error(grpc.StatusCode.NOT_FOUND, str(file_not_found(kb, file_name)))

    def _ingest(self) -> ingest_pb2_grpc.IngestServiceStub:
        if self.ingest is None:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the gateway's ingest client is not ready")
        return self.ingest

    async def _readable(
        self, caller: Principal, kb: str, file_name: str, timeout: float | None
    ) -> bool | None:
        """Whether the caller may read the file by its access list; None when it does not exist."""
        try:
            with acting_as(GATEWAY):  # the lookup itself is the gateway's
                info = await self._ingest().GetFile(
                    ingest_pb2.GetFileRequest(knowledge_base=kb, file_name=file_name), timeout=timeout
                )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return may_read(caller, info.access)

    async def _hidden_files(self, caller: Principal, kb: str, timeout: float | None) -> set[str]:
        """The knowledge base's files the caller may not read."""
        with acting_as(GATEWAY):
            reply = await self._ingest().ListFiles(
                ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=timeout
            )
        return {info.name for info in reply.files if not may_read(caller, info.access)}

    async def _job(self, job_id: str, permission: Permission, timeout: float | None) -> None:
        """The job must be one the caller may ``permission``; unknown and hidden alike 404."""
        if self.ingest is None:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the gateway's ingest client is not ready")
        job = await self.ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=timeout)
        if not await self.guard.permits(current_caller(), job.knowledge_base, permission):
            raise rpc_error(grpc.StatusCode.NOT_FOUND, str(job_not_found(job_id)))
