"""One ingest job, start to finish: parse -> split -> embed -> index, with the catalog kept current.

The pipeline takes only a job id and re-reads everything from the catalog, so a redelivered
or retried task is harmless: finished jobs are skipped, and a re-run writes the same point ids
(uuid5 over knowledge base, file name, content hash and chunk index), overwriting instead of duplicating.
Before indexing, the file's previous points are deleted (``DeleteByFile``) so a replaced file
never leaves stale chunks behind; the window without vectors lasts only the upsert.

One pipeline serves every task of a worker process (the threads pool shares it): its gRPC
channels and database engine are thread-safe and long-lived, created once per process.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from services.common.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    ResourceExhausted,
    ZhikuError,
    error_from_rpc,
)
from services.common.grpc_client import request_metadata, sync_channel
from services.common.logging import new_request_id, request_id_var
from services.ingest.blobs import BlobStore
from services.ingest.catalog import Catalog
from services.ingest.config import IngestSettings
from services.ingest.metrics import (
    CHUNKS_INDEXED,
    EMBED_BATCH_TEXTS,
    JOB_RETRIES,
    JOB_SECONDS,
    JOBS_FINISHED,
    STAGE_SECONDS,
)
from services.ingest.models import Job, JobState
from services.ingest.parsers import parse
from services.ingest.splitter import Chunk, split_segments
from zhiku.v1 import embed_pb2, embed_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

log = logging.getLogger("zhiku.ingest.pipeline")

EMBED_SERVICE = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
RETRIEVE_SERVICE = retrieve_pb2.DESCRIPTOR.services_by_name["RetrieveService"].full_name

# Fixed namespace of the deterministic point ids; changing it would orphan every indexed point.
POINT_NAMESPACE = uuid.UUID("6f1c3a52-52b7-4c1e-9d0f-2a7e1b9c4d10")

# Errors worth another attempt: the dependency may come back (restart, overload).
TRANSIENT_ERRORS: tuple[type[ZhikuError], ...] = (DependencyUnavailable, ResourceExhausted)

# Progress milestones: parsing is quick, embedding dominates, indexing is the tail.
EMBED_START, INDEX_START = 0.1, 0.8

Request = TypeVar("Request")
Response = TypeVar("Response")


def point_id(kb: str, file_name: str, content_hash: str, chunk_index: int) -> str:
    """Deterministic id of one chunk's point: a retried job overwrites instead of duplicating.

    The file name is part of it, not only the content hash: two files with identical bytes
    (a copy under another name) must not share, and overwrite, each other's points.
    """
    key = "\x1f".join((kb, file_name, content_hash, str(chunk_index)))
    return str(uuid.uuid5(POINT_NAMESPACE, key))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Retry(Exception):
    """The attempt failed transiently; the job is QUEUED again and the task should retry."""

    def __init__(self, message: str, attempt: int) -> None:
        super().__init__(message)
        self.attempt = attempt


class _Abandoned(Exception):
    """The job was cancelled or deleted while running (newer upload, file or KB deleted)."""


@dataclass
class _Run:
    job: Job
    # How many of the file's points are in the index once the old ones were deleted;
    # None while the index is untouched (a failure then leaves the old count valid).
    indexed: int | None = None


@contextmanager
def _stage(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)


class IngestPipeline:
    def __init__(
        self,
        settings: IngestSettings,
        catalog: Catalog,
        blobs: BlobStore,
        embed: embed_pb2_grpc.EmbedServiceStub,
        retrieve: retrieve_pb2_grpc.RetrieveServiceStub,
        channels: Sequence[grpc.Channel] = (),
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.blobs = blobs
        self.embed = embed
        self.retrieve = retrieve
        self._channels = list(channels)

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> IngestPipeline:
        common = settings.common
        catalog = Catalog(settings.catalog_url, settings.sqlite_busy_timeout_s)
        catalog.create_schema()
        embed_channel = sync_channel(common.embed_addr, [EMBED_SERVICE], common.grpc_max_message_mb)
        retrieve_channel = sync_channel(common.retrieve_addr, [RETRIEVE_SERVICE], common.grpc_max_message_mb)
        return cls(
            settings,
            catalog,
            BlobStore(settings.blob_dir),  # type: ignore[arg-type]  # set by the validator
            embed_pb2_grpc.EmbedServiceStub(embed_channel),
            retrieve_pb2_grpc.RetrieveServiceStub(retrieve_channel),
            [embed_channel, retrieve_channel],
        )

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.catalog.dispose()

    # -- the job --------------------------------------------------------------------------

    def run(self, job_id: str) -> JobState | None:
        """Run one attempt of a job; returns its final state, None when there was nothing to do.

        Raises :class:`Retry` after a transient failure with attempts left (job re-queued).
        """
        job = self.catalog.begin_attempt(job_id)
        if job is None:
            log.info("job %s is gone or already finished; nothing to do", job_id)
            return None
        token = request_id_var.set(job.request_id or new_request_id())
        started = time.perf_counter()
        run = _Run(job)
        log.info(
            "ingesting %s into %s (job %s, attempt %d)",
            job.file_name,
            job.knowledge_base,
            job.id,
            job.attempts,
        )
        try:
            state = self._execute(run)
        except _Abandoned:
            log.info("job %s was cancelled while running; its work is dropped", job.id)
            if run.indexed is not None:
                self._drop_orphans(job)
            state = JobState.CANCELLED
        except TRANSIENT_ERRORS as error:
            state = self._transient(run, error)
        except ZhikuError as error:
            state = self._fail(run, str(error))
        except Exception as error:  # a bug or an unexpected library error: still fail clearly
            log.exception("job %s crashed", job.id)
            state = self._fail(run, f"internal error: {type(error).__name__}: {error}")
        finally:
            JOB_SECONDS.observe(time.perf_counter() - started)
            request_id_var.reset(token)
        JOBS_FINISHED.labels(state.value).inc()
        return state

    def _execute(self, run: _Run) -> JobState:
        job = run.job
        chunks = self._prepare(job)
        self._advance(job, JobState.EMBEDDING, EMBED_START)
        vectors, model = self._embed_chunks(job, chunks)
        self._advance(job, JobState.INDEXING, INDEX_START)
        self._index(run, chunks, vectors)
        if not self.catalog.finish_job(job.id, len(chunks), model):
            raise _Abandoned(job.id)
        CHUNKS_INDEXED.inc(len(chunks))
        log.info("job %s succeeded: %d chunks from %s", job.id, len(chunks), job.file_name)
        return JobState.SUCCEEDED

    def _advance(self, job: Job, state: JobState, progress: float) -> None:
        if not self.catalog.advance(job.id, state, progress):
            raise _Abandoned(job.id)

    def _progress(self, job: Job, progress: float) -> None:
        if not self.catalog.set_progress(job.id, min(progress, 0.99)):
            raise _Abandoned(job.id)

    def _prepare(self, job: Job) -> list[Chunk]:
        with _stage("parse"):
            data = self.blobs.read(job.knowledge_base, job.file_name)
            if sha256_hex(data) != job.content_hash:
                # Normally a newer upload, whose own job indexes it (this one is then cancelled).
                raise FailedPrecondition(f"{job.file_name}: the stored original changed since this upload")
            segments = parse(job.file_name, data)
        with _stage("split"):
            chunks = split_segments(segments, job.file_name, job.chunk_size, job.chunk_overlap)
        if not chunks:
            raise FailedPrecondition(f"{job.file_name}: no text left after splitting")
        return chunks

    def _call(self, service: str, method: Callable[..., Response], request: Any, timeout: float) -> Response:
        try:
            return method(request, timeout=timeout, metadata=request_metadata())
        except grpc.RpcError as error:
            mapped = error_from_rpc(error)  # type: ignore[arg-type]
            raise type(mapped)(f"{service} service: {mapped}") from error

    def _embed_chunks(self, job: Job, chunks: list[Chunk]) -> tuple[list[list[float]], str]:
        batch_size = self.settings.embed_batch_size
        vectors: list[list[float]] = []
        model = ""
        dimension = 0
        with _stage("embed"):
            for start in range(0, len(chunks), batch_size):
                texts = [chunk.text for chunk in chunks[start : start + batch_size]]
                EMBED_BATCH_TEXTS.observe(len(texts))
                reply = self._call(
                    "embed",
                    self.embed.Embed,
                    embed_pb2.EmbedRequest(texts=texts, kind=embed_pb2.EMBED_KIND_PASSAGE),
                    self.settings.embed_timeout_s,
                )
                if len(reply.vectors) != len(texts):
                    raise FailedPrecondition(
                        f"embed service returned {len(reply.vectors)} vectors for {len(texts)} texts"
                    )
                for vector in reply.vectors:
                    if dimension and len(vector.values) != dimension:
                        raise FailedPrecondition(
                            f"embed service changed dimension mid-file ({dimension} -> {len(vector.values)})"
                        )
                    dimension = len(vector.values)
                    vectors.append(list(vector.values))
                model = reply.model or model
                done = len(vectors) / len(chunks)
                self._progress(job, EMBED_START + (INDEX_START - EMBED_START) * done)
        if not dimension:
            raise FailedPrecondition("embed service returned empty vectors")
        return vectors, model

    def _index(self, run: _Run, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        job = run.job
        kb = job.knowledge_base
        timeout = self.settings.retrieve_timeout_s
        with _stage("index"):
            self._call(
                "retrieve",
                self.retrieve.EnsureCollection,
                retrieve_pb2.EnsureCollectionRequest(collection=kb, dimension=len(vectors[0])),
                timeout,
            )
            # Re-uploads replace the file: drop its old points first (issue 3 will swap atomically).
            self._call(
                "retrieve",
                self.retrieve.DeleteByFile,
                retrieve_pb2.DeleteByFileRequest(collection=kb, file_name=job.file_name),
                timeout,
            )
            run.indexed = 0
            batch_size = self.settings.upsert_batch_size
            for start in range(0, len(chunks), batch_size):
                points = [
                    retrieve_pb2.Point(
                        id=point_id(kb, job.file_name, job.content_hash, chunk.index),
                        vector=vector,
                        file_name=job.file_name,
                        chunk_index=chunk.index,
                        text=chunk.text,
                        metadata={**chunk.metadata, "content_hash": job.content_hash},
                    )
                    for chunk, vector in zip(
                        chunks[start : start + batch_size], vectors[start : start + batch_size], strict=True
                    )
                ]
                self._call(
                    "retrieve",
                    self.retrieve.Upsert,
                    retrieve_pb2.UpsertRequest(collection=kb, points=points),
                    timeout,
                )
                run.indexed += len(points)
                self._progress(job, INDEX_START + (1 - INDEX_START) * run.indexed / len(chunks))

    def _drop_orphans(self, job: Job) -> None:
        """The job lost its file or knowledge base mid-flight: remove what it just indexed."""
        timeout = self.settings.retrieve_timeout_s
        try:
            if not self.catalog.kb_exists(job.knowledge_base):
                self._call(
                    "retrieve",
                    self.retrieve.DropCollection,
                    retrieve_pb2.DropCollectionRequest(collection=job.knowledge_base),
                    timeout,
                )
            elif self.catalog.find_file(job.knowledge_base, job.file_name) is None:
                self._call(
                    "retrieve",
                    self.retrieve.DeleteByFile,
                    retrieve_pb2.DeleteByFileRequest(collection=job.knowledge_base, file_name=job.file_name),
                    timeout,
                )
        except ZhikuError as error:
            log.warning("could not clean up after cancelled job %s: %s", job.id, error)

    # -- outcomes -------------------------------------------------------------------------

    def _fail(self, run: _Run, reason: str) -> JobState:
        log.warning("job %s failed: %s", run.job.id, reason)
        if not self.catalog.fail_job(run.job.id, reason, chunks_left=run.indexed):
            return JobState.CANCELLED
        return JobState.FAILED

    def _transient(self, run: _Run, error: ZhikuError) -> JobState:
        job = run.job
        if job.attempts >= self.settings.max_attempts:
            suffix = f" (after {job.attempts} attempts)" if job.attempts > 1 else ""
            return self._fail(run, f"{error}{suffix}")
        message = f"attempt {job.attempts} of {self.settings.max_attempts} failed: {error}; retrying"
        if not self.catalog.requeue(job.id, message, chunks_left=run.indexed):
            return JobState.CANCELLED
        JOB_RETRIES.inc()
        raise Retry(message, job.attempts)
