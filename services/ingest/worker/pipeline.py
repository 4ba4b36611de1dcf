"""One ingest job, start to finish: parse -> split -> embed -> index, with the catalog kept current.

The pipeline takes only a job id and re-reads everything from the catalog, so a redelivered
or retried task is harmless: finished jobs are skipped, a job another live worker holds is
left alone (leases), and a re-run writes the same point ids (uuid5 over knowledge base, file
name, content hash, job id and chunk index), overwriting instead of duplicating.

Replacement is atomic for searchers: each job indexes a new generation of the file's points
(metadata ``generation`` = job id) next to the old one and only then, holding the file's
catalog row, deletes every other generation of that file; so a re-upload or a reindex never
leaves the file without vectors, and the catalog's chunk count is written in the same step.
While it runs, a heartbeat thread renews the job's lease: a worker killed mid-job stops
renewing, and the ingest service's sweeper hands the job back to the queue. Every change of
the job's state goes through the job lifecycle (``services.ingest.jobs``); what stays here is
the work and the worker's reaction to its outcome (drop what it indexed, wait or fail).

The jobs in flight share their claims, successes and Upserts (``coalescer.py``) except where
that would lose a guarantee of an embedding-model migration (``services.ingest.migration``),
which go one job at a time as before: points for a migration's shadow collection (a cancel
may drop it while jobs write; the single path checks the migration instead of creating it
again), and the finish of a job whose knowledge base runs a migration or that did not write
the active collection (``finish_job`` records the shadow generation or raises StaleTargets;
see ``JobLifecycle.finish_first_jobs``). Every target is embedded with its own model.

One pipeline serves every task of a worker process (the threads pool shares it): its gRPC
channels and database engine are thread-safe and long-lived, created once per process.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc

from services.common.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ZhikuError,
    error_from_rpc,
)
from services.common.grpc_client import request_metadata, sync_channel
from services.common.logging import new_request_id, request_id_var
from services.common.service_names import EMBED_SERVICE, RETRIEVE_SERVICE
from services.common.sparse import SparseEncoder, SparseVector
from services.ingest.config import IngestSettings
from services.ingest.documents.parent_child import split_parent_child
from services.ingest.documents.parsers import parse
from services.ingest.documents.splitter import TextChunk, split_segments
from services.ingest.jobs import (
    GENERATION_KEY,
    ApplyAcl,
    Claim,
    Finish,
    JobLifecycle,
    Lease,
    LeaseKeeper,
    Progress,
)
from services.ingest.metrics import (
    CHUNKS_INDEXED,
    EMBED_BATCH_TEXTS,
    JOB_RETRIES,
    JOB_SECONDS,
    JOBS_FINISHED,
    STAGE_SECONDS,
)
from services.ingest.migration import MIGRATE_KIND, Migrations, StaleTargets, Target
from services.ingest.store.blobs import BlobStore, sha256_hex
from services.ingest.store.catalog import Catalog
from services.ingest.store.records import JobRecord, JobState
from services.ingest.worker.backoff import Backoff
from services.ingest.worker.batcher import EmbedBatcher
from services.ingest.worker.captions import Captioner
from services.ingest.worker.coalescer import Coalescer
from zhiku.v1 import embed_pb2, embed_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

log = logging.getLogger("zhiku.ingest.pipeline")


# Fixed namespace of the deterministic point ids; changing it would orphan every indexed point.
POINT_NAMESPACE = uuid.UUID("6f1c3a52-52b7-4c1e-9d0f-2a7e1b9c4d10")

# Errors worth another attempt: the dependency may come back (restart, overload).
TRANSIENT_ERRORS: tuple[type[ZhikuError], ...] = (DependencyUnavailable, ResourceExhausted)

# A waiting job asks the dependency it waits for whether it is back before redoing its work;
# one that does not answer so trivial a call within this long is not back.
PROBE_TIMEOUT_S = 10.0

# Progress milestones: parsing is quick, embedding dominates, indexing is the tail.
EMBED_START, INDEX_START = 0.1, 0.8
# Times one job is redone when a migration switched its knowledge base's collection while
# it indexed (each switch needs a whole migration, so more than one is rare).
MAX_STALE_RUNS = 3

Request = TypeVar("Request")
Response = TypeVar("Response")
T = TypeVar("T")
# What the jobs in flight write to the catalog through one coalescer, and what it answers:
# a claim (job id) -> Claim or None, Finish -> bool or None, Progress -> bool, Lease -> the
# ids still running.
CatalogWrite = str | Finish | Progress | Lease
CatalogAnswer = Claim | bool | None | set[str]


def point_id(kb: str, file_name: str, content_hash: str, chunk_index: int, generation: str = "") -> str:
    """Deterministic id of one chunk's point: a retried job overwrites instead of duplicating.

    The file name is part of it, not only the content hash: two files with identical bytes
    (a copy under another name) must not share, and overwrite, each other's points. The
    generation (the job id) keeps a reindex's new points apart from the old ones it replaces.
    """
    parts = (kb, file_name, content_hash, str(chunk_index), *((generation,) if generation else ()))
    return str(uuid.uuid5(POINT_NAMESPACE, "\x1f".join(parts)))


def parent_id(content_hash: str, parent_index: int) -> str:
    """A parent section's id within its file (empty for plain chunks): children that share it
    share their parent, which the gateway puts in an answer's prompt once."""
    return f"{content_hash[:16]}-p{parent_index}" if parent_index >= 0 else ""


class Retry(Exception):
    """The attempt met an unavailable dependency; the job is QUEUED again, waiting, and the task
    should run again after ``delay_s``."""

    def __init__(self, message: str, attempt: int, delay_s: float) -> None:
        super().__init__(message)
        self.attempt = attempt
        self.delay_s = delay_s


class Abandoned(Exception):
    """The job was cancelled or deleted while running (newer upload, file or KB deleted)."""


class FileGone(Abandoned):
    """The file was deleted while its points were being built (a job's: it is cancelled; a
    migration's copy: the file is left for the next round)."""


@dataclass
class _Run:
    job: JobRecord
    # How many points of this job's generation were upserted (0: the index is untouched),
    # and into which collections (two while a migration runs: see services.ingest.migration).
    indexed: int = 0
    written: list[str] = field(default_factory=list)
    # The file's acl tokens its points are written with: the claim's (empty for a migration's
    # copy, whose index() reads them from the catalog once, so every target gets the same).
    acl: list[str] = field(default_factory=list)
    # Where the file is indexed: the claim's targets (see Claim), read again after a
    # migration switched them (StaleTargets).
    targets: list[Target] = field(default_factory=list)
    # Progress share of the target being embedded and indexed: (index, count).
    part: tuple[int, int] = (0, 1)
    # The stage and progress the worker is at, and what the catalog was last told (writes
    # are throttled; what was held back is written while the job waits, see _await).
    stage: JobState = JobState.PARSING
    progress: float = 0.0
    reported_stage: JobState = JobState.PARSING
    reported_progress: float = 0.0
    reported_at: float = field(default_factory=time.monotonic)
    # The chunks' sparse vectors by encoder spec: computed once, sent to every target.
    sparse: dict[str, list[SparseVector]] = field(default_factory=dict)


def _dependency_of(error: ZhikuError) -> str:
    """Which service an unavailable-dependency error came from (the catalog when untagged)."""
    return str(getattr(error, "dependency", "") or "catalog")


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
        self.lifecycle = JobLifecycle(catalog)
        self.migrations = Migrations(catalog)
        self.blobs = blobs
        self.embed = embed
        self.retrieve = retrieve
        self._channels = list(channels)
        # Pictures are captioned only with a vision endpoint configured (None: no calls).
        self._captioner = Captioner.from_settings(settings)
        # (collection, dimension) pairs this process already ensured: one EnsureCollection
        # per knowledge base instead of one per file. An Upsert answering NOT_FOUND (the
        # collection was dropped since) forgets the pair and ensures again. Each with the
        # sparse encoder the retrieve service named for it (None: none to send, see
        # _sparse_encoder), so this process, not retrieve's, cuts and weighs the chunks.
        self._ensured: dict[tuple[str, int], SparseEncoder | None] = {}
        self._unusable_specs: set[str] = set()
        self._backoff = Backoff.from_settings(settings)
        # One batcher per embedding model (texts of two models never share a call); the
        # default model's ("") always, another's from the first job that needs it.
        self._batchers: dict[str, EmbedBatcher] = {}
        self._default_model = ""  # its id, once the embed service has named it
        self._batchers_lock = threading.Lock()
        self.batcher("")
        # The jobs in flight share their catalog transactions and Upsert calls (coalescer.py):
        # the claims, progress reports and successes of many jobs take one transaction, the
        # points of many jobs for one collection one Upsert.
        jobs_at_once = max(1, settings.batch_job_threads)
        self._catalog_writes: Coalescer[CatalogWrite, CatalogAnswer] = Coalescer(
            self._write_catalog, 2 * jobs_at_once, name="ingest-catalog"
        )
        # The leases of the jobs in flight, renewed together through the same writes.
        self._leases = LeaseKeeper(self._renew_leases, settings.lease_s)
        self._upserts: Coalescer[list[retrieve_pb2.Point], None] = Coalescer(
            self._upsert_points, jobs_at_once, name="ingest-upsert"
        )

    def batcher(self, model: str) -> EmbedBatcher:
        """The cross-job batcher of ``model`` (empty: the embed service's default). The default
        model named by its id shares the default's batcher: texts of knowledge bases that
        recorded it and of those that did not still go out in the same calls."""
        if model == self._default_model:
            model = ""
        with self._batchers_lock:
            found = self._batchers.get(model)
            if found is None:
                found = self._batchers[model] = EmbedBatcher(
                    lambda texts: self._embed_texts(texts, model),
                    self.settings.embed_batch_size,
                    self.settings.embed_coalesce_ms / 1000,
                    self.settings.embed_concurrency,
                )
            return found

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
        for batcher in self._batchers.values():
            batcher.close()
        self._leases.close()  # before the writes it goes through
        for coalescer in (self._catalog_writes, self._upserts):
            coalescer.close()
        if self._captioner is not None:
            self._captioner.close()
        for channel in self._channels:
            channel.close()
        self.catalog.dispose()

    # -- the job --------------------------------------------------------------------------

    def run(self, job_id: str) -> JobState | None:
        """Run one attempt of a job; returns its final state, None when there was nothing to do.

        Raises :class:`Retry` after a transient failure with attempts left (job re-queued).
        """
        claim = self._catalog_writes.call(None, job_id)
        if not isinstance(claim, Claim):
            log.info("job %s is gone, finished or held by a live worker; nothing to do", job_id)
            return None
        job = claim.job
        token = request_id_var.set(job.request_id or new_request_id())
        started = time.perf_counter()
        # Who may read the file, as of the claim; a change made later is re-applied by _swap.
        run = _Run(job, acl=list(claim.acl), targets=list(claim.targets))
        log.info(
            "%s %s into %s (job %s, attempt %d)",
            "migrating" if job.kind == MIGRATE_KIND else "ingesting",
            job.file_name or job.embed_model,
            job.knowledge_base,
            job.id,
            job.attempts,
        )
        try:
            with self._leases.hold(job.id):
                if job.kind == MIGRATE_KIND:
                    from services.ingest.worker.migrator import Migrator  # it imports this module

                    state = Migrator(self).run(run)
                else:
                    state = self._execute_current(run)
        except Abandoned:
            log.info("job %s was cancelled while running; its work is dropped", job.id)
            self._clean_up(run)
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

    def _execute_current(self, run: _Run) -> JobState:
        """Run the job against the knowledge base's current collections; again when a
        migration switched them before it could finish (its stale points are dropped first)."""
        for _ in range(MAX_STALE_RUNS):
            try:
                return self._execute(run)
            except StaleTargets:
                log.info(
                    "job %s: the knowledge base switched collections meanwhile; indexing again", run.job.id
                )
                for collection in run.written:
                    self.delete_points(
                        collection, run.job.file_name, only_metadata={GENERATION_KEY: run.job.id}
                    )
                run.written.clear()
                run.indexed = 0
                run.targets = self.migrations.targets(run.job.knowledge_base)
        raise FailedPrecondition(
            f"{run.job.file_name}: the knowledge base switched collections "
            f"{MAX_STALE_RUNS} times while indexing"
        )

    def _execute(self, run: _Run) -> JobState:
        job = run.job
        if job.waiting_for:
            self._probe(job)
        # Read at the claim, before embedding: while a migration runs, the file goes to both
        # collections.
        chunks = self._prepare(job)
        model = ""
        for index, target in enumerate(run.targets):
            run.part = (index, len(run.targets))
            self._report(run, JobState.EMBEDDING, self._share(run, EMBED_START))
            vectors, used = self.embed_chunks(run, chunks, target.model)
            model = model or used
            self._report(run, JobState.INDEXING, self._share(run, INDEX_START))
            self.index(run, target, chunks, vectors)
        self._swap(run, len(chunks), model)
        CHUNKS_INDEXED.inc(len(chunks))
        log.info("job %s succeeded: %d chunks from %s", job.id, len(chunks), job.file_name)
        return JobState.SUCCEEDED

    @staticmethod
    def _share(run: _Run, progress: float) -> float:
        """``progress`` of the current target, as progress of the whole job."""
        index, count = run.part
        return (index + progress) / count

    def _report(self, run: _Run, stage: JobState, progress: float, at_tick: bool = False) -> None:
        """Tell the catalog the stage and progress, at most every ``progress_interval_s``, or
        (``at_tick``, from :meth:`_await`) at the first report tick at least half an interval
        after the last report.

        A small file goes from parsing to succeeded without the writes in between (they were
        most of its catalog traffic); a long one shows every stage and its progress. A cancel
        is noticed at the next write, or at the final one, which is conditional anyway.
        """
        run.stage, run.progress = stage, min(progress, 0.99)
        now = time.monotonic()
        interval = self.settings.progress_interval_s
        since = now - run.reported_at
        # At a tick: the first since the last report, and not a job that was claimed (or
        # reported) just before it, which would mostly be done before the next.
        due = since >= interval or (
            at_tick and since >= interval / 2 and now // interval > run.reported_at // interval
        )
        if not due:
            return
        # With the reports, claims and successes of the other jobs in flight: one transaction.
        report = Progress(run.job.id, run.progress, stage if stage != run.reported_stage else None)
        still_active = self._catalog_writes.call(None, report)
        run.reported_stage, run.reported_progress, run.reported_at = stage, run.progress, now
        if not still_active:
            raise Abandoned(run.job.id)

    def _await(self, run: _Run, piece: Future[T]) -> T:
        """The piece's result; meanwhile, what _report held back is written at the next tick.

        A job's embedding can wait long on texts of other jobs ahead of it in the batcher;
        without this, its last throttled report (often "embedding" itself) would never reach
        the catalog, and the job would read "parsing, 0 %" until it suddenly succeeded. The
        waiting jobs wake at shared ticks (multiples of the interval on the monotonic clock),
        so the reports of every job waiting on the embedder go in one or two catalog writes a
        tick (the first to arrive may go alone); each waking half a second after its own claim,
        they went one write each.
        """
        poll_s = max(self.settings.progress_interval_s, 0.05)
        while True:
            try:
                # Just past the next tick, where the other waiting jobs wake too.
                return piece.result(timeout=poll_s - time.monotonic() % poll_s + 0.001)
            except FutureTimeout:
                if (run.stage, run.progress) != (run.reported_stage, run.reported_progress):
                    self._report(run, run.stage, run.progress, at_tick=True)

    def _probe(self, job: JobRecord) -> None:
        """Ask the dependency the last attempt waited for whether it is back, before parsing
        and embedding the file again (a cheap call; unavailable means another wait)."""
        if job.waiting_for == "retrieve":
            request = retrieve_pb2.StatsRequest(collection=job.knowledge_base)
            self._call("retrieve", self.retrieve.Stats, request, PROBE_TIMEOUT_S)
        elif job.waiting_for == "embed":
            self._call("embed", self.embed.Info, embed_pb2.EmbedInfoRequest(), PROBE_TIMEOUT_S)

    def prepare(self, job: JobRecord) -> list[TextChunk]:
        """The chunks of the job's file: its stored original parsed and split as the job says."""
        return self._prepare(job)

    def _prepare(self, job: JobRecord) -> list[TextChunk]:
        with _stage("parse"):
            data = self.blobs.read(job.knowledge_base, job.file_name)
            if sha256_hex(data) != job.content_hash:
                # Normally a newer upload, whose own job indexes it (this one is then cancelled).
                raise FailedPrecondition(f"{job.file_name}: the stored original changed since this upload")
            segments = (
                self._captioner.parse(job.file_name, data)
                if self._captioner is not None
                else parse(job.file_name, data)
            )
        with _stage("split"):
            if job.parent_chunk_size:
                chunks = split_parent_child(
                    segments,
                    job.file_name,
                    job.chunk_size,
                    job.chunk_overlap,
                    job.parent_chunk_size,
                    splitter=job.splitter,
                    title_enhance=job.title_enhance,
                )
            else:
                chunks = split_segments(
                    segments,
                    job.file_name,
                    job.chunk_size,
                    job.chunk_overlap,
                    splitter=job.splitter,
                    title_enhance=job.title_enhance,
                )
        if not chunks:
            raise FailedPrecondition(f"{job.file_name}: no text left after splitting")
        limit = self.settings.max_chunks_per_file
        if len(chunks) > limit:
            raise InvalidArgument(
                f"{job.file_name} yields {len(chunks):,} chunks, over the limit of {limit:,} per file; "
                "split it or raise ZHIKU_INGEST_MAX_CHUNKS_PER_FILE"
            )
        return chunks

    def call(self, service: str, method: Callable[..., Response], request: Any, timeout: float) -> Response:
        """A call to the embed or retrieve service, its failure mapped (see :meth:`_call`)."""
        return self._call(service, method, request, timeout)

    def _call(self, service: str, method: Callable[..., Response], request: Any, timeout: float) -> Response:
        try:
            return method(request, timeout=timeout, metadata=request_metadata())
        except grpc.RpcError as error:
            mapped = error_from_rpc(error)
            raised = type(mapped)(f"{service} service: {mapped}")
            raised.dependency = service  # type: ignore[attr-defined]  # what a waiting job names
            raise raised from error

    def _embed_texts(self, texts: list[str], model: str = "") -> tuple[list[list[float]], str]:
        """One Embed call (run by the batcher for the texts of every job in flight)."""
        EMBED_BATCH_TEXTS.observe(len(texts))
        reply = self._call(
            "embed",
            self.embed.Embed,
            embed_pb2.EmbedRequest(texts=texts, kind=embed_pb2.EMBED_KIND_PASSAGE, model=model),
            self.settings.embed_timeout_s,
        )
        if not model:
            self._default_model = reply.model
        return [list(vector.values) for vector in reply.vectors], reply.model

    def embed_chunks(
        self, run: _Run, chunks: list[TextChunk], model: str = ""
    ) -> tuple[list[list[float]], str]:
        """The chunks' passage vectors from ``model`` (empty: the default), and its model id."""
        batch_size = self.settings.embed_batch_size
        batcher = self.batcher(model)
        vectors: list[list[float]] = []
        model = ""
        dimension = 0
        with _stage("embed"):
            # Every piece is queued at once: the batcher packs them with other jobs' texts.
            pieces = [
                batcher.submit([chunk.text for chunk in chunks[start : start + batch_size]], run.job.id)
                for start in range(0, len(chunks), batch_size)
            ]
            try:
                for piece in pieces:
                    piece_vectors, piece_model = self._await(run, piece)
                    for vector in piece_vectors:
                        if dimension and len(vector) != dimension:
                            raise FailedPrecondition(
                                f"embed service changed dimension mid-file ({dimension} -> {len(vector)})"
                            )
                        dimension = len(vector)
                        vectors.append(vector)
                    model = piece_model or model
                    done = len(vectors) / len(chunks)
                    progress = EMBED_START + (INDEX_START - EMBED_START) * done
                    self._report(run, JobState.EMBEDDING, self._share(run, progress))
            finally:
                for piece in pieces:
                    piece.cancel()  # a failed or cancelled job stops queuing work
        if not dimension:
            raise FailedPrecondition("embed service returned empty vectors")
        return vectors, model

    def index(self, run: _Run, target: Target, chunks: list[TextChunk], vectors: list[list[float]]) -> None:
        """Upsert the job's generation of the file's points into the target's collection."""
        job = run.job
        kb = job.knowledge_base
        collection = target.collection
        timeout = self.settings.retrieve_timeout_s
        with _stage("index"):
            encoder = self._ensure_collection(collection, len(vectors[0]))
            if not run.acl:
                # A migration's copy: who may read the file, as of now (once per run: every
                # target gets the same tokens); a change made later is re-applied by
                # mark_copied. A job's run has the tokens of its claim (re-applied by _swap).
                current = self.catalog.files.find(kb, job.file_name)
                if current is None:
                    raise FileGone(job.id)  # deleted meanwhile
                run.acl = current.access.tokens()
            if collection not in run.written:
                run.written.append(collection)
            sparse = self._sparse_vectors(run, encoder, chunks)
            batch_size = self.settings.upsert_batch_size
            for start in range(0, len(chunks), batch_size):
                points = [
                    retrieve_pb2.Point(
                        id=point_id(kb, job.file_name, job.content_hash, chunk.index, job.id),
                        vector=vector,
                        file_name=job.file_name,
                        chunk_index=chunk.index,
                        text=chunk.text,
                        metadata={
                            **chunk.metadata,
                            "content_hash": job.content_hash,
                            GENERATION_KEY: job.id,
                        },
                        parent_id=parent_id(job.content_hash, chunk.parent_index),
                        parent_text=chunk.parent_text,
                        acl=run.acl,
                        sparse_indices=terms.indices if terms is not None else (),
                        sparse_values=terms.values if terms is not None else (),
                        sparse_encoder=encoder.spec if encoder is not None else "",
                    )
                    for chunk, vector, terms in zip(
                        chunks[start : start + batch_size],
                        vectors[start : start + batch_size],
                        sparse[start : start + batch_size],
                        strict=True,
                    )
                ]
                if target.shadow:
                    # A migration's shadow: one job's Upsert alone (see _upsert_points).
                    request = retrieve_pb2.UpsertRequest(collection=collection, points=points)
                    try:
                        self._call("retrieve", self.retrieve.Upsert, request, timeout)
                    except NotFound:
                        self._ensured.pop((collection, len(vectors[0])), None)
                        if collection not in self.migrations.collections(kb):
                            # The migration filling it was cancelled: nothing more goes there.
                            run.written.remove(collection)
                            return
                        self._ensure_collection(collection, len(vectors[0]))
                        self._call("retrieve", self.retrieve.Upsert, request, timeout)
                else:
                    # With the points of other jobs in flight for this collection: one Upsert.
                    self._upserts.call(collection, points)
                run.indexed += len(points)
                done = run.indexed / (len(chunks) * len(run.written))
                self._report(run, JobState.INDEXING, self._share(run, INDEX_START + (1 - INDEX_START) * done))

    def _write_catalog(self, _: Hashable, items: list[CatalogWrite]) -> list[CatalogAnswer]:
        """Claims (job ids), successes (Finish) and progress reports (Progress) of the jobs in
        flight, in one transaction; a lease renewal (Lease, every lease_s / 4) in its own."""
        claims = [item for item in items if isinstance(item, str)]
        finishes = [item for item in items if isinstance(item, Finish)]
        reports = [item for item in items if isinstance(item, Progress)]
        leases = [item for item in items if isinstance(item, Lease)]
        answers: dict[type, Iterator[CatalogAnswer]] = {}
        if claims or finishes or reports:
            claimed, finished, reported = self.lifecycle.claim_and_finish(
                claims, self.settings.lease_s, finishes, reports
            )
            answers = {str: iter(claimed), Finish: iter(finished), Progress: iter(reported)}
        if leases:
            held = [job_id for lease in leases for job_id in lease.job_ids]
            running = self.lifecycle.renew_leases(held, self.settings.lease_s)
            answers[Lease] = iter([running & set(lease.job_ids) for lease in leases])
        return [next(answers[type(item)]) for item in items]

    def _renew_leases(self, job_ids: list[str]) -> set[str]:
        """The lease keeper's round, with this worker's other catalog writes (one writer)."""
        return cast(set[str], self._catalog_writes.call(None, Lease(tuple(job_ids))))

    def _upsert_points(self, key: Hashable, groups: list[list[retrieve_pb2.Point]]) -> list[None]:
        """One Upsert with the points of several jobs for one collection (their generations
        and ids are their own: each job's points are exactly what it would upsert alone).

        Only active collections come here: a migration's shadow may be dropped by a cancel
        while jobs write to it, and ensuring it again (below) would bring it back, so its
        points go one job at a time through index(), which checks the migration first."""
        collection = str(key)
        request = retrieve_pb2.UpsertRequest(
            collection=collection, points=[point for points in groups for point in points]
        )
        timeout = self.settings.retrieve_timeout_s
        try:
            self._call("retrieve", self.retrieve.Upsert, request, timeout)
        except NotFound:
            # Dropped since this process ensured it (a knowledge base deleted and created
            # again): ensure it anew, as every job used to, and retry once.
            dimension = len(request.points[0].vector)
            self._ensured.pop((collection, dimension), None)
            self._ensure_collection(collection, dimension)
            self._call("retrieve", self.retrieve.Upsert, request, timeout)
        return [None] * len(groups)

    def _ensure_collection(self, collection: str, dimension: int) -> SparseEncoder | None:
        """Ensure the collection once per process; the sparse encoder its points are sent with."""
        key = (collection, dimension)
        if key in self._ensured:
            return self._ensured[key]
        reply = self._call(
            "retrieve",
            self.retrieve.EnsureCollection,
            retrieve_pb2.EnsureCollectionRequest(collection=collection, dimension=dimension),
            self.settings.retrieve_timeout_s,
        )
        encoder = self._ensured[key] = self._sparse_encoder(reply.sparse_encoder)
        return encoder

    def _sparse_encoder(self, spec: str) -> SparseEncoder | None:
        """The encoder of the retrieve service's ``spec``; None when there is nothing to send:
        no spec (a collection without sparse vectors), or one this process cannot reproduce
        (a retrieve release newer than this worker's, other tokenizer releases). The service
        then encodes the texts itself, as before writers did: slower searches, same results."""
        if not spec:
            return None
        try:
            return SparseEncoder.from_spec(spec)
        except ValueError as error:
            if spec not in self._unusable_specs:
                self._unusable_specs.add(spec)
                log.warning("points go without sparse vectors, the retrieve service encodes them: %s", error)
            return None

    @staticmethod
    def _sparse_vectors(
        run: _Run, encoder: SparseEncoder | None, chunks: Sequence[TextChunk]
    ) -> Sequence[SparseVector | None]:
        """Each chunk's sparse vector by ``encoder`` (Nones without one), computed once per
        run: while a migration runs, both targets get the same."""
        if encoder is None:
            return [None] * len(chunks)
        found = run.sparse.get(encoder.spec)
        if found is None:
            with _stage("sparse"):
                found = run.sparse[encoder.spec] = [encoder.document(chunk.text) for chunk in chunks]
        return found

    def ensure_collection(self, collection: str, dimension: int) -> None:
        self._ensure_collection(collection, dimension)

    def delete_points(self, collection: str, file_name: str, **narrowing: dict[str, str]) -> None:
        """DeleteByFile in one collection (narrowed by ``keep_metadata`` or ``only_metadata``);
        a collection that is gone already holds nothing to delete."""
        with suppress(NotFound):
            self._call(
                "retrieve",
                self.retrieve.DeleteByFile,
                retrieve_pb2.DeleteByFileRequest(collection=collection, file_name=file_name, **narrowing),
                self.settings.retrieve_timeout_s,
            )

    def drop_collection(self, collection: str) -> None:
        self._call(
            "retrieve",
            self.retrieve.DropCollection,
            retrieve_pb2.DropCollectionRequest(collection=collection),
            self.settings.retrieve_timeout_s,
        )

    def _swap(self, run: _Run, chunks: int, model: str) -> None:
        """Drop the file's other generations, re-apply the file's access list if it changed
        while the job ran, and record the new count, as one catalog step."""
        job = run.job

        def drop_previous(collections: list[str]) -> None:
            for collection in collections:
                self.delete_points(collection, job.file_name, keep_metadata={GENERATION_KEY: job.id})

        with _stage("swap"):
            # Most jobs (a file's first, its list unchanged, no migration running) finish with
            # others in one transaction; the rest (None) drop, re-apply or check the migration's
            # collections through finish_job (see JobLifecycle.finish_first_jobs).
            finish = Finish(job.id, chunks, model, tuple(run.acl), tuple(run.written))
            finished = self._catalog_writes.call(None, finish)
            if finished is None or isinstance(finished, Claim):
                finished = self.lifecycle.finish_job(
                    job.id,
                    chunks,
                    model,
                    swap=drop_previous,
                    written=run.written,
                    acl=run.acl,
                    reapply=self.set_file_acl(job.file_name),
                )
            if not finished:
                raise Abandoned(job.id)

    def set_file_acl(self, file_name: str) -> ApplyAcl:
        """What re-applies ``file_name``'s acl tokens to its points in the given collections
        (every one a job or a migration's copy wrote to); a collection gone holds nothing."""

        def apply(collections: list[str], acl: list[str]) -> None:
            for collection in collections:
                with suppress(NotFound):
                    self._call(
                        "retrieve",
                        self.retrieve.SetFileAcl,
                        retrieve_pb2.SetFileAclRequest(collection=collection, file_name=file_name, acl=acl),
                        self.settings.retrieve_timeout_s,
                    )

        return apply

    def _clean_up(self, run: _Run) -> None:
        """After a cancel or failure: drop what the job indexed, then release its lease, which
        tells the sweeper there is nothing left to remove (see JobLifecycle.lapsed_cleanups).
        A migration's cleanup is forgetting its shadow collection."""
        if run.job.kind == MIGRATE_KIND:
            self.abandon_migration(run.job)
        elif not run.indexed or self._drop_orphans(run.job, run.written):
            self.lifecycle.release_lease(run.job.id)

    def abandon_migration(self, job: JobRecord) -> None:
        """A migration that ended without switching: its shadow collection goes (the active
        one was never touched); done already when the ingest API cancelled it."""
        try:
            shadow = self.migrations.abandon(job.knowledge_base, job.id)
            if shadow:
                self.drop_collection(shadow)
        except ZhikuError as error:
            log.warning("could not drop the shadow collection of migration %s: %s", job.id, error)
            return
        self.lifecycle.release_lease(job.id)

    def _drop_orphans(self, job: JobRecord, written: list[str]) -> bool:
        """The job was cancelled or failed mid-flight: remove what it indexed (or the whole file or
        collection when those were deleted meanwhile). False when the retrieve service refused."""
        try:
            if not self.catalog.knowledge_bases.exists(job.knowledge_base):
                for collection in written:
                    self.drop_collection(collection)
            elif self.catalog.files.find(job.knowledge_base, job.file_name) is None:
                for collection in written:
                    self.delete_points(collection, job.file_name)
            elif self.catalog.jobs.get(job.id).state is not JobState.SUCCEEDED:
                # (A worker presumed dead may have finished this very job meanwhile: its
                # points are the same generation and must stay.)
                for collection in written:
                    self.delete_points(collection, job.file_name, only_metadata={GENERATION_KEY: job.id})
        except ZhikuError as error:
            log.warning("could not clean up after cancelled job %s: %s", job.id, error)
            return False
        return True

    # -- outcomes -------------------------------------------------------------------------

    def _fail(self, run: _Run, reason: str) -> JobState:
        log.warning("job %s failed: %s", run.job.id, reason)
        failed = self.lifecycle.fail_job(run.job.id, reason)
        # Its partial points go; the previous generation is untouched, so the file's count
        # stays right.
        self._clean_up(run)
        return JobState.FAILED if failed else JobState.CANCELLED

    def _transient(self, run: _Run, error: ZhikuError) -> JobState:
        """A dependency was unavailable: the job waits for it (QUEUED, with the next try's time)
        unless it has waited the whole give-up window already (see JobLifecycle.wait_or_give_up)."""
        job = run.job
        dependency = _dependency_of(error)
        delay = self._backoff.delay(job.retries + 1)
        state = self.lifecycle.wait_or_give_up(
            job, str(error), dependency, delay, self.settings.retry_give_up_s
        )
        if state is not JobState.QUEUED:
            # Given up (its partial points go) or cancelled meanwhile (no retry comes).
            self._clean_up(run)
            return state
        # Partial points stay: the retry writes the same ids (same job, same generation).
        JOB_RETRIES.inc()
        log.warning(
            "job %s waits for %s (attempt %d, next try in %.1f s): %s",
            job.id,
            dependency,
            job.attempts,
            delay,
            error,
        )
        raise Retry(f"waiting for {dependency}: {error}", job.attempts, delay)
