"""The IngestService gRPC servicer: knowledge bases, files and jobs over the catalog.

A thin servicer: it validates names and limits, keeps the catalog and the blob store in step,
submits and cancels jobs through the job lifecycle (``services.ingest.jobs``), enqueues work
for the Celery worker and asks the retrieve service to drop vectors. Catalog, blob and broker
calls block, so they run in threads and the event loop stays free.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import mimetypes
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from services.common.errors import (
    AlreadyExists,
    DependencyUnavailable,
    InvalidArgument,
    ResourceExhausted,
    error_from_rpc,
    kb_not_found,
)
from services.common.logging import current_request_id
from services.common.names import check_file_name, check_kb_name
from services.ingest.api.downstream import DownstreamStubs
from services.ingest.api.parent_mode import parent_chunk_size
from services.ingest.api.sources import SourceMethods
from services.ingest.broker import IngestCelery, enqueue_ingest
from services.ingest.config import IngestSettings
from services.ingest.jobs import GENERATION_KEY, JobLifecycle, Submission
from services.ingest.migration import MIGRATE_KIND, Migrations
from services.ingest.store.access import FileAccessList
from services.ingest.store.blobs import BlobStore, sha256_hex
from services.ingest.store.catalog import Catalog
from services.ingest.store.records import SPLITTERS, FileRecord, JobRecord, JobState
from zhiku.v1 import embed_pb2, ingest_pb2, ingest_pb2_grpc, retrieve_pb2

log = logging.getLogger("zhiku.ingest")

MAX_DESCRIPTION_CHARS = 2000
MAX_LIST_JOBS = 10_000
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 20, 20_000


@dataclass(frozen=True)
class _Upload:
    """One file of a submission, checked: its stored name, chunking and access."""

    request: ingest_pb2.SubmitFileRequest
    name: str
    chunk_size: int
    chunk_overlap: int
    splitter: str
    access: FileAccessList | None
    uploader: str


def _job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(f"job id {value!r} is not a UUID") from None


def _splitter(value: str) -> str:
    """The splitter name; empty means the default (the Chinese-aware recursive splitter)."""
    if not value:
        return SPLITTERS[0]
    if value not in SPLITTERS:
        raise InvalidArgument(f"splitter must be one of {', '.join(SPLITTERS)}, got {value!r}")
    return value


def _rpc_error(service: str, error: grpc.RpcError) -> Exception:
    mapped = error_from_rpc(error)
    return type(mapped)(f"{service} service: {mapped}")


class IngestServicer(SourceMethods, ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self,
        settings: IngestSettings,
        catalog: Catalog,
        blobs: BlobStore,
        celery: IngestCelery,
        downstream: DownstreamStubs,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.lifecycle = JobLifecycle(catalog)
        self.migrations = Migrations(catalog)
        self.blobs = blobs
        self.celery = celery
        self.downstream = downstream

    # -- knowledge bases ------------------------------------------------------------------

    async def _embed_model(self) -> str:
        """The embedding model's name, recorded on the KB; empty (filled by the first job) if down."""
        embed = self.downstream.embed
        if embed is None:
            return ""
        try:
            info: embed_pb2.EmbedInfo = await embed.Info(
                embed_pb2.EmbedInfoRequest(), timeout=self.settings.embed_info_timeout_s
            )
        except grpc.RpcError as error:
            log.warning("embed service did not answer Info (%s); model recorded later", error.code().name)
            return ""
        return info.model

    async def CreateKnowledgeBase(
        self,
        request: ingest_pb2.CreateKnowledgeBaseRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.CreateKnowledgeBaseRequest, ingest_pb2.KnowledgeBase],
    ) -> ingest_pb2.KnowledgeBase:
        name = check_kb_name(request.name)
        if len(request.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(
                f"description is {len(request.description)} characters; the limit is {MAX_DESCRIPTION_CHARS}"
            )
        parents = parent_chunk_size(
            request.parent_child or None, request.parent_chunk_size, 0, self.settings.chunk_size
        )
        if await asyncio.to_thread(self.catalog.knowledge_bases.exists, name):
            # Checked before asking embed.Info; the insert below still guards against races.
            raise AlreadyExists(f"knowledge base {name!r} already exists")
        if await asyncio.to_thread(self.migrations.is_retired, name):
            # A deleted knowledge base's collection from before its migration, not dropped yet:
            # the new knowledge base must start empty.
            await self._retrieve_call(
                "DropCollection", retrieve_pb2.DropCollectionRequest(collection=name), missing_ok=True
            )
            await asyncio.to_thread(self.migrations.forget_retired, name)
        model = await self._embed_model()
        kb = await asyncio.to_thread(
            self.catalog.knowledge_bases.create, name, request.description, model, parents
        )
        log.info("created knowledge base %s", name)
        return kb.to_pb()

    async def GetKnowledgeBase(
        self,
        request: ingest_pb2.GetKnowledgeBaseRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetKnowledgeBaseRequest, ingest_pb2.KnowledgeBase],
    ) -> ingest_pb2.KnowledgeBase:
        kb = await asyncio.to_thread(self.catalog.knowledge_bases.get, check_kb_name(request.name))
        return kb.to_pb()

    async def ListKnowledgeBases(
        self,
        request: ingest_pb2.ListKnowledgeBasesRequest,
        context: grpc.aio.ServicerContext[
            ingest_pb2.ListKnowledgeBasesRequest, ingest_pb2.ListKnowledgeBasesResponse
        ],
    ) -> ingest_pb2.ListKnowledgeBasesResponse:
        kbs = await asyncio.to_thread(self.catalog.knowledge_bases.list)
        return ingest_pb2.ListKnowledgeBasesResponse(knowledge_bases=[kb.to_pb() for kb in kbs])

    async def DeleteKnowledgeBase(
        self,
        request: ingest_pb2.DeleteKnowledgeBaseRequest,
        context: grpc.aio.ServicerContext[
            ingest_pb2.DeleteKnowledgeBaseRequest, ingest_pb2.DeleteKnowledgeBaseResponse
        ],
    ) -> ingest_pb2.DeleteKnowledgeBaseResponse:
        name = check_kb_name(request.name)
        # NotFound before touching anything; a migration's shadow goes with the active one.
        collections = await asyncio.to_thread(self.migrations.collections, name)
        # Vectors first: if retrieve is down nothing is deleted and the call can be repeated.
        for collection in collections:
            await self._retrieve_call(
                "DropCollection", retrieve_pb2.DropCollectionRequest(collection=collection), missing_ok=True
            )
        await asyncio.to_thread(self.catalog.knowledge_bases.delete, name)
        await asyncio.to_thread(self.blobs.delete_kb, name)
        log.info("deleted knowledge base %s", name)
        return ingest_pb2.DeleteKnowledgeBaseResponse()

    async def drop_generation(self, kb: str, file_name: str, job_id: str) -> None:
        """Remove the points one job indexed (its generation) and nothing else of the file;
        for a migration job (no file), its shadow collection."""
        if not file_name:
            await self._abandon_migration(kb, job_id)
            return
        if not await asyncio.to_thread(self.catalog.knowledge_bases.exists, kb):
            return
        for collection in await asyncio.to_thread(self.migrations.collections, kb):
            request = retrieve_pb2.DeleteByFileRequest(
                collection=collection, file_name=file_name, only_metadata={GENERATION_KEY: job_id}
            )
            await self._retrieve_call("DeleteByFile", request, missing_ok=True)

    async def _abandon_migration(self, kb: str, job_id: str) -> None:
        """Forget a cancelled or failed migration's shadow collection and drop it."""
        shadow = await asyncio.to_thread(self.migrations.abandon, kb, job_id)
        if shadow:
            await self._retrieve_call(
                "DropCollection", retrieve_pb2.DropCollectionRequest(collection=shadow), missing_ok=True
            )
            log.info("dropped %s, the shadow collection of migration %s of %s", shadow, job_id, kb)

    async def drop_retired_collections(self) -> None:
        """Drop the collections migrations switched away from, once their delay has passed."""
        for name in await asyncio.to_thread(self.migrations.due_retired):
            await self._retrieve_call(
                "DropCollection", retrieve_pb2.DropCollectionRequest(collection=name), missing_ok=True
            )
            await asyncio.to_thread(self.migrations.forget_retired, name)
            log.info("dropped %s, retired by a migration", name)

    async def MigrateKnowledgeBase(
        self,
        request: ingest_pb2.MigrateKnowledgeBaseRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.MigrateKnowledgeBaseRequest, ingest_pb2.Job],
    ) -> ingest_pb2.Job:
        """Start re-embedding the knowledge base with another served model (a job of kind
        ``migrate``); searches keep using the current model until the switch."""
        kb = check_kb_name(request.knowledge_base)
        wanted = request.embed_model.strip()
        if not wanted:
            raise InvalidArgument("embed_model is empty: name a model the embed service serves")
        await asyncio.to_thread(self.catalog.knowledge_bases.get, kb)  # NotFound first
        embed = self.downstream.embed
        if embed is None:
            raise RuntimeError("embed channel not open (startup hook did not run)")
        try:
            info: embed_pb2.EmbedInfo = await embed.Info(
                embed_pb2.EmbedInfoRequest(model=wanted), timeout=self.settings.embed_info_timeout_s
            )
        except grpc.RpcError as error:
            raise _rpc_error("embed", error) from None
        job = await asyncio.to_thread(self.migrations.start, kb, info.model, current_request_id())
        await self._enqueue(job)
        log.info("queued migration %s of %s to %s", job.id, kb, info.model)
        return job.to_pb()

    async def _retrieve_call(self, method: str, request: Any, missing_ok: bool = False) -> Any:
        """Call retrieve; NOT_FOUND (no collection yet) is an empty answer when ``missing_ok``."""
        retrieve = self.downstream.retrieve
        if retrieve is None:
            raise RuntimeError("retrieve channel not open (startup hook did not run)")
        try:
            return await getattr(retrieve, method)(request, timeout=self.settings.retrieve_timeout_s)
        except grpc.RpcError as error:
            if missing_ok and error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _rpc_error("retrieve", error) from None

    # -- files ----------------------------------------------------------------------------

    def _chunking(
        self, request: ingest_pb2.SubmitFileRequest | ingest_pb2.ReindexFileRequest, default_size: int = 0
    ) -> tuple[int, int]:
        """Chunk size and overlap for this upload; 0 means the service default."""
        if request.chunk_size < 0 or request.chunk_overlap < 0:
            raise InvalidArgument("chunk_size and chunk_overlap must not be negative")
        size = request.chunk_size or default_size or self.settings.chunk_size
        if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
            raise InvalidArgument(
                f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}, got {size}"
            )
        # The default overlap is scaled down for small custom chunks so it stays below them.
        overlap = request.chunk_overlap or min(self.settings.chunk_overlap, size // 5)
        if overlap >= size:
            raise InvalidArgument(f"chunk_overlap ({overlap}) must be smaller than chunk_size ({size})")
        return size, overlap

    async def SubmitFile(
        self,
        request: ingest_pb2.SubmitFileRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.SubmitFileRequest, ingest_pb2.Job],
    ) -> ingest_pb2.Job:
        return (await self._submit(request.knowledge_base, [request]))[0]

    async def SubmitFiles(
        self,
        request: ingest_pb2.SubmitFilesRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.SubmitFilesRequest, ingest_pb2.SubmitFilesResponse],
    ) -> ingest_pb2.SubmitFilesResponse:
        if not request.files:
            raise InvalidArgument("SubmitFiles needs at least one file")
        kbs = {file.knowledge_base for file in request.files}
        if len(kbs) != 1:
            raise InvalidArgument("the files of one SubmitFiles call must go to one knowledge base")
        return ingest_pb2.SubmitFilesResponse(jobs=await self._submit(kbs.pop(), list(request.files)))

    def _upload(self, request: ingest_pb2.SubmitFileRequest) -> _Upload:
        """One file's checks, before anything of its upload is stored."""
        name = check_file_name(request.file_name)
        size = len(request.content)
        if size > self.settings.max_file_bytes:
            raise ResourceExhausted(
                f"{name} is {size / 1048576:.1f} MB; the upload limit is {self.settings.max_file_mb:g} MB"
            )
        if size == 0:
            raise InvalidArgument(f"{name} is empty")
        chunk_size, chunk_overlap = self._chunking(request)
        return _Upload(
            request,
            name,
            chunk_size,
            chunk_overlap,
            _splitter(request.splitter),
            FileAccessList.from_pb(request.access) if request.HasField("access") else None,
            request.uploader.strip(),
        )

    async def _submit(self, kb: str, requests: list[ingest_pb2.SubmitFileRequest]) -> list[ingest_pb2.Job]:
        """Store the originals, record every file and its job in one catalog transaction and
        queue the new jobs as one message: an upload of many small files is a handful of
        writes, not a handful per file. Every file is checked first, so a bad one fails the
        call before anything is stored."""
        kb = check_kb_name(kb)
        uploads = [self._upload(request) for request in requests]
        names = [upload.name for upload in uploads]
        if len(set(names)) != len(names):
            raise InvalidArgument("a file appears twice in one submission")
        request_id = current_request_id()
        previous: dict[str, FileRecord] = {}

        def record() -> list[JobRecord]:
            # The blocking steps in one thread hop (an upload is hundreds of small files).
            kb_parents = self.catalog.knowledge_bases.parent_chunk_size(kb)  # before storing anything
            if kb_parents is None:
                raise kb_not_found(kb)
            previous.update(self.catalog.files.find_many(kb, names))
            submissions = []
            for upload in uploads:
                request = upload.request
                content_hash = sha256_hex(request.content)
                existing = previous.get(upload.name)
                if existing is None or existing.content_hash != content_hash:
                    # Identical bytes are already stored: the blob is left alone for running readers.
                    self.blobs.write(kb, upload.name, request.content)
                submissions.append(
                    Submission(
                        upload.name,
                        len(request.content),
                        content_hash,
                        upload.chunk_size,
                        upload.chunk_overlap,
                        splitter=upload.splitter,
                        title_enhance=request.title_enhance,
                        override=request.override,
                        parent_chunk_size=parent_chunk_size(
                            request.parent_child if request.HasField("parent_child") else None,
                            request.parent_chunk_size,
                            kb_parents,
                            upload.chunk_size,
                        ),
                        access=upload.access,
                        uploader=upload.uploader,
                    )
                )
            return self.lifecycle.submit_files(kb, submissions, request_id)

        jobs = await asyncio.to_thread(record)
        for upload in uploads:
            known = previous.get(upload.name)
            if known is not None and (upload.access is not None or upload.uploader):
                # The file's indexed points follow its new list now, not when the new job ends.
                await self._sync_access(kb, upload.name, None, unless=known.access.tokens())
        queued = [job for job in jobs if not job.unchanged]
        for job in jobs:
            if job.unchanged:
                log.info("%s/%s is unchanged (job %s); nothing queued", kb, job.file_name, job.id)
        if queued:
            await self._enqueue(*queued)
            log.info("queued %d jobs for %d files of %s", len(queued), len(jobs), kb)
        return [job.to_pb() for job in jobs]

    async def _enqueue(self, *jobs: JobRecord) -> None:
        """Publish the jobs as one message (the worker runs them side by side)."""
        try:
            await asyncio.to_thread(enqueue_ingest, self.celery, *(job.id for job in jobs))
        except Exception as error:
            reason = f"could not enqueue the job: {type(error).__name__}: {error}"
            for job in jobs:
                await asyncio.to_thread(self.lifecycle.fail_job, job.id, reason)
            raise DependencyUnavailable(f"job queue unavailable: {error}") from error

    async def ReindexFile(
        self,
        request: ingest_pb2.ReindexFileRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.ReindexFileRequest, ingest_pb2.Job],
    ) -> ingest_pb2.Job:
        """Index the stored original again, with new split settings (unset: the last job's)."""
        kb = check_kb_name(request.knowledge_base)
        name = check_file_name(request.file_name)
        current = await asyncio.to_thread(self.catalog.files.get, kb, name)
        last = await asyncio.to_thread(self.catalog.jobs.find, current.job_id)
        chunk_size, chunk_overlap = self._chunking(request, default_size=last.chunk_size if last else 0)
        if last is not None and not request.chunk_size and not request.chunk_overlap:
            chunk_overlap = last.chunk_overlap
        splitter = _splitter(request.splitter or (last.splitter if last else ""))
        title_enhance = (
            request.title_enhance
            if request.HasField("title_enhance")
            else (last.title_enhance if last else False)
        )
        parents = parent_chunk_size(
            request.parent_child if request.HasField("parent_child") else None,
            request.parent_chunk_size,
            last.parent_chunk_size if last else 0,
            chunk_size,
        )
        job = await asyncio.to_thread(
            functools.partial(
                self.lifecycle.submit_file,
                kb,
                name,
                current.size,
                current.content_hash,
                chunk_size,
                chunk_overlap,
                current_request_id(),
                splitter=splitter,
                title_enhance=title_enhance,
                override=True,
                parent_chunk_size=parents,
            )
        )
        await self._enqueue(job)
        log.info("queued reindex job %s for %s/%s", job.id, kb, name)
        return job.to_pb()

    async def _sync_access(
        self, kb: str, name: str, access: FileAccessList | None, unless: list[str] | None = None
    ) -> FileRecord:
        """Record ``access`` (None: keep the list) and apply the file's tokens to its points,
        in one catalog transaction holding the file's row (JobLifecycle.set_access); the
        retrieve call runs on this loop while the catalog thread waits for it. ``unless``:
        tokens the points already carry, so no call is needed when they did not change."""
        loop = asyncio.get_running_loop()

        def apply(collections: list[str], acl: list[str]) -> None:
            # Every collection the file's points are in: a migration's shadow too, and one it
            # switched away from that a search may still read until it is dropped.
            if unless is not None and acl == unless:
                return
            for collection in collections:
                request = retrieve_pb2.SetFileAclRequest(collection=collection, file_name=name, acl=acl)
                call = self._retrieve_call("SetFileAcl", request, missing_ok=True)
                asyncio.run_coroutine_threadsafe(call, loop).result()

        return await asyncio.to_thread(self.lifecycle.set_access, kb, name, access, apply)

    async def GetFile(
        self,
        request: ingest_pb2.GetFileRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetFileRequest, ingest_pb2.FileInfo],
    ) -> ingest_pb2.FileInfo:
        kb = check_kb_name(request.knowledge_base)
        name = check_file_name(request.file_name)
        return (await asyncio.to_thread(self.catalog.files.get, kb, name)).to_pb()

    async def SetFileAccess(
        self,
        request: ingest_pb2.SetFileAccessRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.SetFileAccessRequest, ingest_pb2.FileInfo],
    ) -> ingest_pb2.FileInfo:
        """Change who may read a file: the catalog and its points (no re-embedding)."""
        kb = check_kb_name(request.knowledge_base)
        name = check_file_name(request.file_name)
        access = FileAccessList.from_pb(request.access)
        record = await self._sync_access(kb, name, access)
        log.info("access of %s/%s is now %s", kb, name, record.access.tokens())
        return record.to_pb()

    async def ListJobs(
        self,
        request: ingest_pb2.ListJobsRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.ListJobsRequest, ingest_pb2.ListJobsResponse],
    ) -> ingest_pb2.ListJobsResponse:
        if request.limit < 0:
            raise InvalidArgument("limit must not be negative")
        limit = min(request.limit or self.settings.list_jobs_limit, MAX_LIST_JOBS)
        jobs = await asyncio.to_thread(self.catalog.jobs.list, check_kb_name(request.knowledge_base), limit)
        return ingest_pb2.ListJobsResponse(jobs=[job.to_pb() for job in jobs])

    async def CancelJob(
        self,
        request: ingest_pb2.CancelJobRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.CancelJobRequest, ingest_pb2.Job],
    ) -> ingest_pb2.Job:
        job_id = _job_id(request.id)
        await asyncio.to_thread(self.catalog.jobs.get, job_id)  # NotFound first
        job = await asyncio.to_thread(self.lifecycle.cancel_job, job_id)
        if job.kind == MIGRATE_KIND and job.state is JobState.CANCELLED:
            # The active collection was never touched; the shadow goes now (the worker stops
            # at its next progress write).
            await self._abandon_migration(job.knowledge_base, job_id)
        log.info("cancel of job %s: now %s", job_id, job.state.value)
        return job.to_pb()

    async def GetJob(
        self,
        request: ingest_pb2.GetJobRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetJobRequest, ingest_pb2.Job],
    ) -> ingest_pb2.Job:
        job = await asyncio.to_thread(self.catalog.jobs.get, _job_id(request.id))
        return job.to_pb()

    async def ListFiles(
        self,
        request: ingest_pb2.ListFilesRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.ListFilesRequest, ingest_pb2.ListFilesResponse],
    ) -> ingest_pb2.ListFilesResponse:
        files = await asyncio.to_thread(self.catalog.files.list, check_kb_name(request.knowledge_base))
        return ingest_pb2.ListFilesResponse(files=[f.to_pb() for f in files])

    async def DeleteFile(
        self,
        request: ingest_pb2.DeleteFileRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.DeleteFileRequest, ingest_pb2.DeleteFileResponse],
    ) -> ingest_pb2.DeleteFileResponse:
        kb = check_kb_name(request.knowledge_base)
        name = check_file_name(request.file_name)
        await asyncio.to_thread(self.catalog.files.get, kb, name)  # NotFound for unknown kb/file
        active, *shadow = await asyncio.to_thread(self.migrations.collections, kb)
        reply = await self._retrieve_call(
            "DeleteByFile",
            retrieve_pb2.DeleteByFileRequest(collection=active, file_name=name),
            missing_ok=True,
        )
        for collection in shadow:  # a migration's: deletes apply to both
            await self._delete_from(collection, name)
        await asyncio.to_thread(self.lifecycle.delete_file, kb, name)
        # A migration that started meanwhile may have copied the file before its row went (a
        # copy finishing later finds no row and removes itself).
        for collection in set(await asyncio.to_thread(self.migrations.collections, kb)) - {active, *shadow}:
            await self._delete_from(collection, name)
        await asyncio.to_thread(self.blobs.delete, kb, name)
        deleted = reply.deleted if reply is not None else 0
        log.info("deleted %s/%s (%d chunks)", kb, name, deleted)
        return ingest_pb2.DeleteFileResponse(deleted_chunks=deleted)

    async def _delete_from(self, collection: str, file_name: str) -> None:
        request = retrieve_pb2.DeleteByFileRequest(collection=collection, file_name=file_name)
        await self._retrieve_call("DeleteByFile", request, missing_ok=True)

    async def GetFileContent(
        self,
        request: ingest_pb2.GetFileContentRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetFileContentRequest, ingest_pb2.FileContent],
    ) -> ingest_pb2.FileContent:
        kb = check_kb_name(request.knowledge_base)
        name = check_file_name(request.file_name)
        await asyncio.to_thread(self.catalog.files.get, kb, name)
        content = await asyncio.to_thread(self.blobs.read, kb, name)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return ingest_pb2.FileContent(file_name=name, content_type=content_type, content=content)
