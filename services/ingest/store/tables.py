"""The catalog's SQL tables (knowledge bases, files, ingest jobs) and their rows as records.

One schema for SQLite (embedded) and PostgreSQL (deployed). Repositories and the job
lifecycle (``services.ingest.jobs``) query these tables; callers outside the store only ever
see the plain records of :mod:`services.ingest.store.records`, built here from rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Double, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.ingest.store.access import FileAccessList
from services.ingest.store.records import FileRecord, JobRecord, JobState, KnowledgeBaseRecord

# Bulk UPDATEs of the catalog never touch rows loaded as objects in the same session that are
# used afterwards, so the ORM need not evaluate them against its identity map (CPU per statement).
NO_SYNC = {"synchronize_session": False}

# Columns added after the first release, created on existing databases by create_schema.
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "jobs": {
        "splitter": "VARCHAR(16) NOT NULL DEFAULT 'recursive'",
        "title_enhance": "BOOLEAN NOT NULL DEFAULT FALSE",
        "lease_until": "DOUBLE PRECISION NOT NULL DEFAULT 0",
        "retries": "INTEGER NOT NULL DEFAULT 0",
        "retry_at": "DOUBLE PRECISION NOT NULL DEFAULT 0",
        "waiting_for": "VARCHAR(32) NOT NULL DEFAULT ''",
        "waiting_since": "DOUBLE PRECISION NOT NULL DEFAULT 0",
        "parent_chunk_size": "INTEGER NOT NULL DEFAULT 0",
        "kind": "VARCHAR(16) NOT NULL DEFAULT 'file'",
        "embed_model": "VARCHAR(255) NOT NULL DEFAULT ''",
    },
    "knowledge_bases": {
        "parent_chunk_size": "INTEGER NOT NULL DEFAULT 0",
        "collection": "VARCHAR(64) NOT NULL DEFAULT ''",
        "shadow_collection": "VARCHAR(64) NOT NULL DEFAULT ''",
        "shadow_model": "VARCHAR(255) NOT NULL DEFAULT ''",
        "migration_job": "VARCHAR(36) NOT NULL DEFAULT ''",
    },
    "files": {
        "access": "TEXT NOT NULL DEFAULT ''",
        "uploader": "VARCHAR(255) NOT NULL DEFAULT ''",
        "shadow_generation": "VARCHAR(36) NOT NULL DEFAULT ''",
        "shadow_chunks": "INTEGER NOT NULL DEFAULT 0",
    },
}


class CatalogBase(DeclarativeBase):
    """Declarative base of the ingest catalog's tables (the gateway's tables have their own)."""


class KnowledgeBaseRow(CatalogBase):
    __tablename__ = "knowledge_bases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    embed_model: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[float] = mapped_column(Double)
    # Parent-child chunking by default for its uploads: the parents' size bound; 0: plain.
    parent_chunk_size: Mapped[int] = mapped_column(Integer, default=0)
    # The vector collection searches and uploads use; "" is the knowledge base's own name
    # (every knowledge base before its first migration). See services.ingest.migration.
    collection: Mapped[str] = mapped_column(String(64), default="")
    # While a migration to shadow_model runs (job migration_job): the collection it fills.
    # Uploads go to both collections meanwhile, deletes apply to both.
    shadow_collection: Mapped[str] = mapped_column(String(64), default="")
    shadow_model: Mapped[str] = mapped_column(String(255), default="")
    migration_job: Mapped[str] = mapped_column(String(36), default="")

    @property
    def active_collection(self) -> str:
        return self.collection or self.name


class FileRow(CatalogBase):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("kb_id", "name", name="uq_files_kb_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="")
    # The job that owns this file's vectors now; older jobs lose the right to update the row.
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    # Who may read it: FileAccessList JSON, empty when open (services.ingest.store.access).
    access: Mapped[str] = mapped_column(Text, default="")
    # The last uploader's user id (empty for keys without a user); kept on a restricted list.
    uploader: Mapped[str] = mapped_column(String(255), default="")
    # During a migration: the generation (job id) of this file's points the shadow collection
    # holds in full; the switch waits until it is every indexed file's current one.
    shadow_generation: Mapped[str] = mapped_column(String(36), default="")
    # ... and how many points that is there (the file's count once the migration switches).
    shadow_chunks: Mapped[int] = mapped_column(Integer, default=0)


class JobRow(CatalogBase):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Double, default=0.0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    # The submitting request's id, so the worker's logs and calls join the upload's trace.
    request_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Double, index=True)
    updated_at: Mapped[float] = mapped_column(Double)
    splitter: Mapped[str] = mapped_column(String(16), default="recursive")
    title_enhance: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_until: Mapped[float] = mapped_column(Double, default=0.0)
    # Waiting for an unavailable dependency (see JobLifecycle.requeue_waiting and JobRecord).
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[float] = mapped_column(Double, default=0.0)
    waiting_for: Mapped[str] = mapped_column(String(32), default="")
    waiting_since: Mapped[float] = mapped_column(Double, default=0.0)
    parent_chunk_size: Mapped[int] = mapped_column(Integer, default=0)
    # "file" (an upload or reindex of file_name) or "migrate" (a knowledge base's move to the
    # embedding model embed_model; file_name is empty).
    kind: Mapped[str] = mapped_column(String(16), default="file")
    embed_model: Mapped[str] = mapped_column(String(255), default="")


class RetiredCollectionRow(CatalogBase):
    """A collection a migration switched away from, dropped once ``drop_after`` has passed
    (by the ingest API's sweeper, so a worker restart cannot leave it behind)."""

    __tablename__ = "retired_collections"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    drop_after: Mapped[float] = mapped_column(Double)


class SourceRow(CatalogBase):
    """A source a knowledge base syncs from: its kind, its settings (JSON) and its secret
    (encrypted JSON, see services.ingest.store.secrets)."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("kb_id", "name", name="uq_sources_kb_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    config: Mapped[str] = mapped_column(Text, default="{}")
    secret: Mapped[str] = mapped_column(Text, default="")
    interval_s: Mapped[int] = mapped_column(Integer, default=0)
    next_sync_at: Mapped[float] = mapped_column(Double, default=0.0, index=True)
    created_at: Mapped[float] = mapped_column(Double)


class SourceItemRow(CatalogBase):
    """A file of the knowledge base that a source owns: a sync re-indexes or removes only these."""

    __tablename__ = "source_items"
    __table_args__ = (UniqueConstraint("source_id", "file_name", name="uq_source_items_file"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    item: Mapped[str] = mapped_column(Text)


class SyncRunRow(CatalogBase):
    """One sync of a source; ``report`` is the JSON of its lists (added, updated, ...)."""

    __tablename__ = "sync_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    report: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Double, index=True)
    started_at: Mapped[float] = mapped_column(Double, default=0.0)
    finished_at: Mapped[float] = mapped_column(Double, default=0.0)


def kb_record(row: KnowledgeBaseRow, file_count: int = 0, chunk_count: int = 0) -> KnowledgeBaseRecord:
    return KnowledgeBaseRecord(
        name=row.name,
        description=row.description,
        embed_model=row.embed_model,
        created_at=row.created_at,
        file_count=int(file_count),
        chunk_count=int(chunk_count or 0),
        parent_chunk_size=row.parent_chunk_size or 0,
        collection=row.active_collection,
        migrating_to=row.shadow_model or "",
        migration_job=row.migration_job or "",
    )


def file_record(kb: str, row: FileRow) -> FileRecord:
    return FileRecord(
        knowledge_base=kb,
        name=row.name,
        size=row.size,
        content_hash=row.content_hash,
        chunks=row.chunks,
        state=JobState(row.state),
        error=row.error,
        job_id=row.job_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        access=FileAccessList.from_json(row.access),
        uploader=row.uploader or "",
    )


def job_record(kb: str, row: Any, unchanged: bool = False) -> JobRecord:
    """A JobRecord from a JobRow, or from a plain row of the jobs table's columns."""
    return JobRecord(
        id=row.id,
        knowledge_base=kb,
        file_name=row.file_name,
        content_hash=row.content_hash,
        state=JobState(row.state),
        progress=row.progress,
        chunks=row.chunks,
        error=row.error,
        attempts=row.attempts,
        chunk_size=row.chunk_size,
        chunk_overlap=row.chunk_overlap,
        request_id=row.request_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        splitter=row.splitter or "recursive",
        title_enhance=bool(row.title_enhance),
        lease_until=row.lease_until or 0.0,
        unchanged=unchanged,
        retries=row.retries or 0,
        retry_at=row.retry_at or 0.0,
        waiting_for=row.waiting_for or "",
        waiting_since=row.waiting_since or 0.0,
        parent_chunk_size=row.parent_chunk_size or 0,
        kind=getattr(row, "kind", None) or "file",
        embed_model=getattr(row, "embed_model", None) or "",
    )
