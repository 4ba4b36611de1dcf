"""Records of the ingest catalog (knowledge bases, files, jobs, job states) and their protobuf form.

The repositories and the job lifecycle return these plain dataclasses (never live ORM rows),
so a record can cross a thread boundary (``asyncio.to_thread``) or outlive its database
session safely; each owns its ``to_pb`` so the servicer stays a thin converter.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from services.ingest.store.access import OPEN, FileAccessList
from zhiku.v1 import ingest_pb2


class JobState(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXING = "indexing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    def to_pb(self) -> ingest_pb2.JobState:
        # Value() is typed to return int; the stubs type the enum's values as the enum class.
        return cast(ingest_pb2.JobState, ingest_pb2.JobState.Value(f"JOB_STATE_{self.name}"))


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset(set(JobState) - TERMINAL_STATES)
# States in which a worker holds the job (and renews its lease).
RUNNING_STATES = frozenset({JobState.PARSING, JobState.EMBEDDING, JobState.INDEXING})
SPLITTERS = ("recursive", "markdown")


@dataclass(frozen=True)
class KnowledgeBaseRecord:
    name: str
    description: str
    embed_model: str
    created_at: float
    file_count: int = 0
    chunk_count: int = 0
    # Parent-child chunking by default for its uploads: the parents' size bound; 0: plain.
    parent_chunk_size: int = 0
    # The collection searches read; while a migration runs, its target model and job.
    collection: str = ""
    migrating_to: str = ""
    migration_job: str = ""

    def to_pb(self) -> ingest_pb2.KnowledgeBase:
        return ingest_pb2.KnowledgeBase(
            name=self.name,
            description=self.description,
            file_count=self.file_count,
            chunk_count=self.chunk_count,
            embed_model=self.embed_model,
            created_at=self.created_at,
            parent_child=self.parent_chunk_size > 0,
            parent_chunk_size=self.parent_chunk_size,
            collection=self.collection or self.name,
            migrating_to=self.migrating_to,
            migration_job=self.migration_job,
        )


@dataclass(frozen=True)
class FileRecord:
    knowledge_base: str
    name: str
    size: int
    content_hash: str
    chunks: int
    state: JobState
    error: str
    job_id: str
    created_at: float
    updated_at: float
    access: FileAccessList = OPEN
    uploader: str = ""

    def to_pb(self) -> ingest_pb2.FileInfo:
        return ingest_pb2.FileInfo(
            name=self.name,
            size=self.size,
            content_hash=self.content_hash,
            chunks=self.chunks,
            state=self.state.to_pb(),
            error=self.error,
            created_at=self.created_at,
            updated_at=self.updated_at,
            job_id=self.job_id,
            access=self.access.to_pb(),
            uploader=self.uploader,
        )


@dataclass(frozen=True)
class JobRecord:
    id: str
    knowledge_base: str
    file_name: str
    content_hash: str
    state: JobState
    progress: float
    chunks: int
    error: str
    attempts: int
    chunk_size: int
    chunk_overlap: int
    request_id: str
    created_at: float
    updated_at: float
    splitter: str = "recursive"
    title_enhance: bool = False
    # Parent-child chunking: the parents' size bound; 0 for plain chunks.
    parent_chunk_size: int = 0
    # Until when the worker running it is known alive (heartbeats); 0 when no worker holds it.
    lease_until: float = 0.0
    # Set on the answer to an upload of content identical to what is indexed: nothing was queued.
    unchanged: bool = False
    # Attempts that ended waiting for an unavailable dependency (they do not count as crashes).
    retries: int = 0
    # While QUEUED after such an attempt: when the next try is due (0: not waiting), which
    # dependency it waits for, and since when the job has been waiting (for the give-up window).
    retry_at: float = 0.0
    waiting_for: str = ""
    waiting_since: float = 0.0
    # "file" or "migrate" (a knowledge base's move to the embedding model embed_model).
    kind: str = "file"
    embed_model: str = ""

    @property
    def waiting(self) -> bool:
        return self.state is JobState.QUEUED and self.retry_at > 0

    def status_text(self, now: float | None = None) -> str:
        """What the job's ``error`` field tells a user: the failure, or what it waits for.

        A job waiting for a dependency is QUEUED (it is, for a later try) and says so here,
        with the countdown computed when asked, so a client polling it sees it move.
        """
        if not self.waiting:
            return self.error
        due = math.ceil(self.retry_at - (time.time() if now is None else now))
        when = f"next try in {due} s" if due > 0 else "next try now"
        return f"waiting for {self.waiting_for} (attempt {self.attempts}, {when}): {self.error}"

    def to_pb(self) -> ingest_pb2.Job:
        return ingest_pb2.Job(
            id=self.id,
            knowledge_base=self.knowledge_base,
            file_name=self.file_name,
            state=self.state.to_pb(),
            progress=self.progress,
            chunks=self.chunks,
            error=self.status_text(),
            created_at=self.created_at,
            updated_at=self.updated_at,
            unchanged=self.unchanged,
            attempts=self.attempts,
            chunk_size=self.chunk_size,
            chunk_overlap=self.chunk_overlap,
            splitter=self.splitter,
            title_enhance=self.title_enhance,
            parent_chunk_size=self.parent_chunk_size,
            kind=self.kind,
            embed_model=self.embed_model,
        )
