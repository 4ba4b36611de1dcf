"""Public JSON shapes of a knowledge base's sources and their sync reports.

S3 keys are write-only: ``SourceCreate`` accepts them, ``Source`` has no field that could
carry them back, only ``credentials_set``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from zhiku.v1 import ingest_pb2

SourceKind = Literal["directory", "s3", "web"]
SyncState = Literal["queued", "running", "succeeded", "failed"]


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    kind: SourceKind
    interval_s: int = Field(
        default=0,
        ge=0,
        le=366 * 86400,
        description="seconds between scheduled syncs (at least 5); 0: on demand only",
    )
    path: str = Field(
        default="", max_length=4096, description="directory: relative to the server's sources root"
    )
    bucket: str = Field(default="", max_length=255)
    prefix: str = Field(default="", max_length=1024, description="s3: only keys starting with this")
    endpoint_url: str = Field(default="", max_length=2048, description="s3: empty for AWS")
    region: str = Field(default="", max_length=64)
    access_key_id: str = Field(default="", max_length=1024, description="write-only: stored encrypted")
    secret_access_key: str = Field(default="", max_length=4096, description="write-only: stored encrypted")
    start_url: str = Field(default="", max_length=2048, description="web: crawled to max_depth")
    sitemap_url: str = Field(default="", max_length=2048, description="web: its pages instead of a crawl")
    max_depth: int = Field(default=0, ge=0, le=10, description="web: 0 for the server's default")
    max_pages: int = Field(default=0, ge=0, le=10_000)
    max_page_bytes: int = Field(default=0, ge=0, le=1 << 40, description="web: 0 for the server's default")

    def to_pb(self) -> ingest_pb2.Source:
        return ingest_pb2.Source(**self.model_dump())


class SyncFailure(BaseModel):
    item: str
    reason: str


class SyncReport(BaseModel):
    id: str
    source: str
    knowledge_base: str
    state: SyncState
    trigger: str
    added: list[str]
    updated: list[str]
    removed: list[str]
    failed: list[SyncFailure]
    unchanged: int
    error: str | None
    job_ids: list[str] = Field(description="the ingest jobs queued for added and updated files")
    created_at: float
    started_at: float
    finished_at: float

    @classmethod
    def from_pb(cls, report: ingest_pb2.SyncReport) -> SyncReport:
        return cls(
            id=report.id,
            source=report.source,
            knowledge_base=report.knowledge_base,
            state=report.state,  # type: ignore[arg-type]  # the service's four states
            trigger=report.trigger,
            added=list(report.added),
            updated=list(report.updated),
            removed=list(report.removed),
            failed=[SyncFailure(item=f.item, reason=f.reason) for f in report.failed],
            unchanged=report.unchanged,
            error=report.error or None,
            job_ids=list(report.job_ids),
            created_at=report.created_at,
            started_at=report.started_at,
            finished_at=report.finished_at,
        )


class Source(BaseModel):
    name: str
    knowledge_base: str
    kind: str
    interval_s: int
    path: str
    bucket: str
    prefix: str
    endpoint_url: str
    region: str
    credentials_set: bool = Field(description="whether S3 keys are stored (they are never returned)")
    start_url: str
    sitemap_url: str
    max_depth: int
    max_pages: int
    max_page_bytes: int
    created_at: float
    next_sync_at: float = Field(description="unix seconds; 0 when not scheduled")
    last_sync: SyncReport | None

    @classmethod
    def from_pb(cls, source: ingest_pb2.Source) -> Source:
        return cls(
            name=source.name,
            knowledge_base=source.knowledge_base,
            kind=source.kind,
            interval_s=source.interval_s,
            path=source.path,
            bucket=source.bucket,
            prefix=source.prefix,
            endpoint_url=source.endpoint_url,
            region=source.region,
            credentials_set=source.credentials_set,
            start_url=source.start_url,
            sitemap_url=source.sitemap_url,
            max_depth=source.max_depth,
            max_pages=source.max_pages,
            max_page_bytes=source.max_page_bytes,
            created_at=source.created_at,
            next_sync_at=source.next_sync_at,
            last_sync=SyncReport.from_pb(source.last_sync) if source.HasField("last_sync") else None,
        )


class SourceList(BaseModel):
    data: list[Source]
