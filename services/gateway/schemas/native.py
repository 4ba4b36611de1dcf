"""Public JSON shapes of the native API and their conversion from the services' messages.

Conversions live next to the shapes (``from_pb``), so routes stay a few lines long and the
mapping of internal job stages to the public states is written once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from services.gateway.names import KB_NAME_MAX_CHARS, validate_kb_name
from services.gateway.schemas.refs import KB_REF, KBS_REF
from zhiku.v1 import common_pb2, ingest_pb2

JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobStageName = Literal["queued", "parsing", "embedding", "indexing", "succeeded", "failed", "cancelled"]

_STAGE_BY_PB: dict[int, JobStageName] = {
    ingest_pb2.JOB_STATE_UNSPECIFIED: "queued",
    ingest_pb2.JOB_STATE_QUEUED: "queued",
    ingest_pb2.JOB_STATE_PARSING: "parsing",
    ingest_pb2.JOB_STATE_EMBEDDING: "embedding",
    ingest_pb2.JOB_STATE_INDEXING: "indexing",
    ingest_pb2.JOB_STATE_SUCCEEDED: "succeeded",
    ingest_pb2.JOB_STATE_FAILED: "failed",
    ingest_pb2.JOB_STATE_CANCELLED: "cancelled",
}
# The public API folds the working stages into "running"; the stage stays visible separately.
_STATE_BY_STAGE: dict[JobStageName, JobStateName] = {
    "queued": "queued",
    "parsing": "running",
    "embedding": "running",
    "indexing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


def job_stage(state: int) -> JobStageName:
    return _STAGE_BY_PB.get(state, "queued")


def job_state(state: int) -> JobStateName:
    return _STATE_BY_STAGE[job_stage(state)]


KnowledgeBaseNameField = Annotated[
    str,
    Field(min_length=1, max_length=KB_NAME_MAX_CHARS, examples=["handbook", "员工手册"]),
    AfterValidator(validate_kb_name),
]


PARENT_CHILD_HELP = (
    "parent-child chunks: small children (chunk_size) are embedded and matched, answers read "
    "their parent section of at most parent_chunk_size characters"
)


class CreateKnowledgeBase(BaseModel):
    name: Annotated[KnowledgeBaseNameField, Field(json_schema_extra=KB_REF)]
    description: str = Field(default="", max_length=2000)
    parent_child: bool = Field(default=False, description=f"default for uploads: {PARENT_CHILD_HELP}")
    parent_chunk_size: int = Field(
        default=0, ge=0, le=100_000, description="0: the service's default (1500 characters)"
    )


class MigrateKnowledgeBase(BaseModel):
    embed_model: str = Field(
        min_length=1,
        max_length=255,
        description="a model the embed service serves: its ZHIKU_EMBED_EXTRA_MODELS entry "
        "(e5, use, a TEI URL) or the model id it reports",
    )


class KnowledgeBase(BaseModel):
    name: str
    description: str
    file_count: int
    chunk_count: int
    embed_model: str = Field(description="the model that embedded its chunks and embeds its queries")
    created_at: float = Field(description="unix seconds")
    parent_child: bool = Field(default=False, description=f"uploads' default: {PARENT_CHILD_HELP}")
    parent_chunk_size: int = Field(default=0, description="the parents' size bound; 0 when off")
    collection: str = Field(default="", description="the vector collection searches read")
    migrating_to: str | None = Field(
        default=None, description="while a migration runs: the embedding model it moves to"
    )
    migration_job: str | None = Field(default=None, description="while a migration runs: its job")

    @classmethod
    def from_pb(cls, kb: ingest_pb2.KnowledgeBase) -> KnowledgeBase:
        return cls(
            name=kb.name,
            description=kb.description,
            file_count=kb.file_count,
            chunk_count=kb.chunk_count,
            embed_model=kb.embed_model,
            created_at=kb.created_at,
            parent_child=kb.parent_child,
            parent_chunk_size=kb.parent_chunk_size,
            collection=kb.collection or kb.name,
            migrating_to=kb.migrating_to or None,
            migration_job=kb.migration_job or None,
        )


class KnowledgeBaseList(BaseModel):
    data: list[KnowledgeBase]


# Longest user id or group name an access list takes (the ingest catalog's bound).
ACCESS_ENTRY_MAX_CHARS = 255
AccessEntry = Annotated[str, Field(min_length=1, max_length=ACCESS_ENTRY_MAX_CHARS, pattern=r"^\S+$")]


class FileAccess(BaseModel):
    """Who may read a file's text (search, chat citations, download): user ids and group
    names. Both empty: everyone who may view the knowledge base. A restricted list always
    keeps the file's uploader."""

    users: list[AccessEntry] = Field(default_factory=list, max_length=1000)
    groups: list[AccessEntry] = Field(default_factory=list, max_length=1000)

    @classmethod
    def from_pb(cls, access: ingest_pb2.FileAccess) -> FileAccess:
        return cls(users=list(access.users), groups=list(access.groups))

    def to_pb(self) -> ingest_pb2.FileAccess:
        return ingest_pb2.FileAccess(users=self.users, groups=self.groups)


class FileEntry(BaseModel):
    file_name: str
    name: str = Field(description="same as file_name (kept for older clients)")
    size: int
    chunks: int = Field(description="chunks indexed now; always equals the file's points in the index")
    state: JobStateName
    stage: JobStageName
    error: str | None
    job_id: str = Field(description="the job of the file's latest upload or reindex")
    uploaded_at: float = Field(description="unix seconds of the first upload")
    created_at: float = Field(description="unix seconds (same as uploaded_at)")
    updated_at: float = Field(description="unix seconds of the latest change")
    access: FileAccess = Field(description="who may read the file; both lists empty: everyone")
    uploader: str | None = Field(description="user id of the latest uploader (None for keys without a user)")

    @classmethod
    def from_pb(cls, info: ingest_pb2.FileInfo) -> FileEntry:
        return cls(
            file_name=info.name,
            name=info.name,
            size=info.size,
            chunks=info.chunks,
            state=job_state(info.state),
            stage=job_stage(info.state),
            error=info.error or None,
            job_id=info.job_id,
            uploaded_at=info.created_at,
            created_at=info.created_at,
            updated_at=info.updated_at or info.created_at,
            access=FileAccess.from_pb(info.access),
            uploader=info.uploader or None,
        )


class FileList(BaseModel):
    data: list[FileEntry]


class Job(BaseModel):
    id: str
    knowledge_base: str
    file_name: str
    state: JobStateName
    stage: JobStageName
    progress: float = Field(ge=0, le=1)
    chunks: int
    error: str | None
    attempts: int = 0
    chunk_size: int = 0
    chunk_overlap: int = 0
    splitter: str = "recursive"
    title_enhance: bool = False
    parent_chunk_size: int = Field(default=0, description="parent-child chunks' parent size; 0: plain")
    created_at: float = Field(default=0.0, description="unix seconds")
    updated_at: float = Field(default=0.0, description="unix seconds")
    kind: Literal["file", "migrate"] = Field(
        default="file", description="file: an upload or reindex; migrate: a move to another embedding model"
    )
    embed_model: str | None = Field(default=None, description="migrate: the model it moves to")

    @classmethod
    def from_pb(cls, job: ingest_pb2.Job) -> Job:
        return cls(
            id=job.id,
            knowledge_base=job.knowledge_base,
            file_name=job.file_name,
            state=job_state(job.state),
            stage=job_stage(job.state),
            progress=min(max(job.progress, 0.0), 1.0),
            chunks=job.chunks,
            error=job.error or None,
            attempts=job.attempts,
            chunk_size=job.chunk_size,
            chunk_overlap=job.chunk_overlap,
            splitter=job.splitter or "recursive",
            title_enhance=job.title_enhance,
            parent_chunk_size=job.parent_chunk_size,
            created_at=job.created_at,
            updated_at=job.updated_at,
            kind="migrate" if job.kind == "migrate" else "file",
            embed_model=job.embed_model or None,
        )


class JobList(BaseModel):
    data: list[Job] = Field(description="newest first")


class SubmittedJob(BaseModel):
    id: str
    file_name: str
    state: JobStateName
    unchanged: bool = Field(
        default=False, description="identical content was already indexed: nothing was queued"
    )

    @classmethod
    def from_pb(cls, job: ingest_pb2.Job, file_name: str = "") -> SubmittedJob:
        return cls(
            id=job.id,
            file_name=job.file_name or file_name,
            state=job_state(job.state),
            unchanged=job.unchanged,
        )


SplitterName = Literal["recursive", "markdown"]


class ReindexRequest(BaseModel):
    chunk_size: int = Field(default=0, ge=0, le=100_000, description="0: the file's last setting")
    chunk_overlap: int = Field(default=0, ge=0, le=100_000, description="0: the file's last setting")
    splitter: SplitterName | None = Field(default=None, description="null: the file's last setting")
    title_enhance: bool | None = Field(default=None, description="null: the file's last setting")
    parent_child: bool | None = Field(default=None, description="null: the file's last setting")
    parent_chunk_size: int = Field(default=0, ge=0, le=100_000, description="0: the last or default size")


class UploadAccepted(BaseModel):
    jobs: list[SubmittedJob]


# Longest text the gateway searches with: a search query, or the question of a knowledge-base
# chat (far below what the embed service takes per text, so its limit is never what a
# client meets).
MAX_QUERY_CHARS = 8000

SearchModeName = Literal["hybrid", "dense", "sparse"]
FusionName = Literal["dbsf", "rrf"]


class RetrievalParams(BaseModel):
    """Search options shared by the search route and knowledge-base chat."""

    mode: SearchModeName = Field(
        default="hybrid", description="dense vectors, BM25-style sparse vectors, or both fused"
    )
    fusion: FusionName | None = Field(
        default=None,
        description="hybrid only: distribution-based score fusion or reciprocal rank fusion; "
        "null: the retrieve service's default (ZHIKU_RETRIEVE_HYBRID_FUSION, dbsf)",
    )
    file_names: list[str] = Field(default_factory=list, max_length=1000, description="only these files")
    metadata_filter: dict[str, str] = Field(
        default_factory=dict, max_length=50, description="only chunks whose metadata has all these values"
    )
    knowledge_bases: list[KnowledgeBaseNameField] = Field(
        default_factory=list,
        max_length=20,
        description="more knowledge bases to search; hits merged by score",
        json_schema_extra=KBS_REF,
    )
    rerank: bool = Field(default=False, description="rerank top_k x 4 candidates with the embed service")


class SearchRequest(RetrievalParams):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int | None = Field(default=None, ge=1, le=100, description="default: the gateway's default_top_k")
    score_threshold: float = Field(
        default=0.0, ge=0.0, le=1.0, description="keep hits with score >= threshold (similarity in [0, 1])"
    )


class ParentSection(BaseModel):
    """The section a parent-child chunk belongs to: what an answer's prompt reads."""

    id: str
    text: str
    heading: str = Field(default="", description="the section's heading path, joined with ' > '")


class SearchHit(BaseModel):
    id: str
    text: str
    score: float = Field(description="similarity in [0, 1], higher is better")
    file_name: str
    metadata: dict[str, str]
    parent: ParentSection | None = Field(
        default=None, description="parent-child chunks: the parent section of this (child) hit"
    )

    @classmethod
    def from_pb(cls, passage: common_pb2.Passage) -> SearchHit:
        return cls(
            id=passage.chunk_id,
            text=passage.text,
            score=round(passage.score, 6),
            file_name=passage.file_name,
            metadata=dict(passage.metadata),
            parent=ParentSection(
                id=passage.parent_id,
                text=passage.parent_text,
                heading=passage.metadata.get("heading", ""),
            )
            if passage.parent_id
            else None,
        )


class SearchResults(BaseModel):
    data: list[SearchHit]
