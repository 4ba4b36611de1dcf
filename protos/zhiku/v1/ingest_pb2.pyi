from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_PARSING: _ClassVar[JobState]
    JOB_STATE_EMBEDDING: _ClassVar[JobState]
    JOB_STATE_INDEXING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_PARSING: JobState
JOB_STATE_EMBEDDING: JobState
JOB_STATE_INDEXING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class KnowledgeBase(_message.Message):
    __slots__ = ("name", "description", "file_count", "chunk_count", "embed_model", "created_at", "parent_child", "parent_chunk_size", "collection", "migrating_to", "migration_job")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    EMBED_MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHILD_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MIGRATING_TO_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_JOB_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    file_count: int
    chunk_count: int
    embed_model: str
    created_at: float
    parent_child: bool
    parent_chunk_size: int
    collection: str
    migrating_to: str
    migration_job: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., file_count: _Optional[int] = ..., chunk_count: _Optional[int] = ..., embed_model: _Optional[str] = ..., created_at: _Optional[float] = ..., parent_child: _Optional[bool] = ..., parent_chunk_size: _Optional[int] = ..., collection: _Optional[str] = ..., migrating_to: _Optional[str] = ..., migration_job: _Optional[str] = ...) -> None: ...

class CreateKnowledgeBaseRequest(_message.Message):
    __slots__ = ("name", "description", "parent_child", "parent_chunk_size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHILD_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parent_child: bool
    parent_chunk_size: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parent_child: _Optional[bool] = ..., parent_chunk_size: _Optional[int] = ...) -> None: ...

class GetKnowledgeBaseRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListKnowledgeBasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKnowledgeBasesResponse(_message.Message):
    __slots__ = ("knowledge_bases",)
    KNOWLEDGE_BASES_FIELD_NUMBER: _ClassVar[int]
    knowledge_bases: _containers.RepeatedCompositeFieldContainer[KnowledgeBase]
    def __init__(self, knowledge_bases: _Optional[_Iterable[_Union[KnowledgeBase, _Mapping]]] = ...) -> None: ...

class DeleteKnowledgeBaseRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteKnowledgeBaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "knowledge_base", "file_name", "state", "progress", "chunks", "error", "created_at", "updated_at", "unchanged", "attempts", "chunk_size", "chunk_overlap", "splitter", "title_enhance", "parent_chunk_size", "kind", "embed_model")
    ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    TITLE_ENHANCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EMBED_MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    knowledge_base: str
    file_name: str
    state: JobState
    progress: float
    chunks: int
    error: str
    created_at: float
    updated_at: float
    unchanged: bool
    attempts: int
    chunk_size: int
    chunk_overlap: int
    splitter: str
    title_enhance: bool
    parent_chunk_size: int
    kind: str
    embed_model: str
    def __init__(self, id: _Optional[str] = ..., knowledge_base: _Optional[str] = ..., file_name: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., progress: _Optional[float] = ..., chunks: _Optional[int] = ..., error: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., unchanged: _Optional[bool] = ..., attempts: _Optional[int] = ..., chunk_size: _Optional[int] = ..., chunk_overlap: _Optional[int] = ..., splitter: _Optional[str] = ..., title_enhance: _Optional[bool] = ..., parent_chunk_size: _Optional[int] = ..., kind: _Optional[str] = ..., embed_model: _Optional[str] = ...) -> None: ...

class FileAccess(_message.Message):
    __slots__ = ("users", "groups")
    USERS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedScalarFieldContainer[str]
    groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, users: _Optional[_Iterable[str]] = ..., groups: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitFileRequest(_message.Message):
    __slots__ = ("knowledge_base", "file_name", "content", "chunk_size", "chunk_overlap", "override", "splitter", "title_enhance", "parent_child", "parent_chunk_size", "access", "uploader")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    TITLE_ENHANCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHILD_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    UPLOADER_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    file_name: str
    content: bytes
    chunk_size: int
    chunk_overlap: int
    override: bool
    splitter: str
    title_enhance: bool
    parent_child: bool
    parent_chunk_size: int
    access: FileAccess
    uploader: str
    def __init__(self, knowledge_base: _Optional[str] = ..., file_name: _Optional[str] = ..., content: _Optional[bytes] = ..., chunk_size: _Optional[int] = ..., chunk_overlap: _Optional[int] = ..., override: _Optional[bool] = ..., splitter: _Optional[str] = ..., title_enhance: _Optional[bool] = ..., parent_child: _Optional[bool] = ..., parent_chunk_size: _Optional[int] = ..., access: _Optional[_Union[FileAccess, _Mapping]] = ..., uploader: _Optional[str] = ...) -> None: ...

class SubmitFilesRequest(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[SubmitFileRequest]
    def __init__(self, files: _Optional[_Iterable[_Union[SubmitFileRequest, _Mapping]]] = ...) -> None: ...

class SubmitFilesResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ReindexFileRequest(_message.Message):
    __slots__ = ("knowledge_base", "file_name", "chunk_size", "chunk_overlap", "splitter", "title_enhance", "parent_child", "parent_chunk_size")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    SPLITTER_FIELD_NUMBER: _ClassVar[int]
    TITLE_ENHANCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHILD_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    file_name: str
    chunk_size: int
    chunk_overlap: int
    splitter: str
    title_enhance: bool
    parent_child: bool
    parent_chunk_size: int
    def __init__(self, knowledge_base: _Optional[str] = ..., file_name: _Optional[str] = ..., chunk_size: _Optional[int] = ..., chunk_overlap: _Optional[int] = ..., splitter: _Optional[str] = ..., title_enhance: _Optional[bool] = ..., parent_child: _Optional[bool] = ..., parent_chunk_size: _Optional[int] = ...) -> None: ...

class MigrateKnowledgeBaseRequest(_message.Message):
    __slots__ = ("knowledge_base", "embed_model")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    EMBED_MODEL_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    embed_model: str
    def __init__(self, knowledge_base: _Optional[str] = ..., embed_model: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("knowledge_base", "limit")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    limit: int
    def __init__(self, knowledge_base: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("name", "size", "content_hash", "chunks", "state", "error", "created_at", "updated_at", "job_id", "access", "uploader")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    UPLOADER_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    content_hash: str
    chunks: int
    state: JobState
    error: str
    created_at: float
    updated_at: float
    job_id: str
    access: FileAccess
    uploader: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., content_hash: _Optional[str] = ..., chunks: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., error: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., job_id: _Optional[str] = ..., access: _Optional[_Union[FileAccess, _Mapping]] = ..., uploader: _Optional[str] = ...) -> None: ...

class GetFileRequest(_message.Message):
    __slots__ = ("knowledge_base", "file_name")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    file_name: str
    def __init__(self, knowledge_base: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class SetFileAccessRequest(_message.Message):
    __slots__ = ("knowledge_base", "file_name", "access")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    file_name: str
    access: FileAccess
    def __init__(self, knowledge_base: _Optional[str] = ..., file_name: _Optional[str] = ..., access: _Optional[_Union[FileAccess, _Mapping]] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("knowledge_base",)
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    def __init__(self, knowledge_base: _Optional[str] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FileInfo]
    def __init__(self, files: _Optional[_Iterable[_Union[FileInfo, _Mapping]]] = ...) -> None: ...

class DeleteFileRequest(_message.Message):
    __slots__ = ("knowledge_base", "file_name")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    file_name: str
    def __init__(self, knowledge_base: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class DeleteFileResponse(_message.Message):
    __slots__ = ("deleted_chunks",)
    DELETED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    deleted_chunks: int
    def __init__(self, deleted_chunks: _Optional[int] = ...) -> None: ...

class GetFileContentRequest(_message.Message):
    __slots__ = ("knowledge_base", "file_name")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    file_name: str
    def __init__(self, knowledge_base: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class FileContent(_message.Message):
    __slots__ = ("file_name", "content_type", "content")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    content_type: str
    content: bytes
    def __init__(self, file_name: _Optional[str] = ..., content_type: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("name", "knowledge_base", "kind", "path", "bucket", "prefix", "endpoint_url", "region", "access_key_id", "secret_access_key", "credentials_set", "start_url", "sitemap_url", "max_depth", "max_pages", "max_page_bytes", "interval_s", "created_at", "next_sync_at", "last_sync")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_SET_FIELD_NUMBER: _ClassVar[int]
    START_URL_FIELD_NUMBER: _ClassVar[int]
    SITEMAP_URL_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_SYNC_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    name: str
    knowledge_base: str
    kind: str
    path: str
    bucket: str
    prefix: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    credentials_set: bool
    start_url: str
    sitemap_url: str
    max_depth: int
    max_pages: int
    max_page_bytes: int
    interval_s: int
    created_at: float
    next_sync_at: float
    last_sync: SyncReport
    def __init__(self, name: _Optional[str] = ..., knowledge_base: _Optional[str] = ..., kind: _Optional[str] = ..., path: _Optional[str] = ..., bucket: _Optional[str] = ..., prefix: _Optional[str] = ..., endpoint_url: _Optional[str] = ..., region: _Optional[str] = ..., access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., credentials_set: _Optional[bool] = ..., start_url: _Optional[str] = ..., sitemap_url: _Optional[str] = ..., max_depth: _Optional[int] = ..., max_pages: _Optional[int] = ..., max_page_bytes: _Optional[int] = ..., interval_s: _Optional[int] = ..., created_at: _Optional[float] = ..., next_sync_at: _Optional[float] = ..., last_sync: _Optional[_Union[SyncReport, _Mapping]] = ...) -> None: ...

class SyncFailure(_message.Message):
    __slots__ = ("item", "reason")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item: str
    reason: str
    def __init__(self, item: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SyncReport(_message.Message):
    __slots__ = ("id", "source", "knowledge_base", "state", "added", "updated", "removed", "failed", "unchanged", "error", "trigger", "created_at", "started_at", "finished_at", "job_ids")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    knowledge_base: str
    state: str
    added: _containers.RepeatedScalarFieldContainer[str]
    updated: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    failed: _containers.RepeatedCompositeFieldContainer[SyncFailure]
    unchanged: int
    error: str
    trigger: str
    created_at: float
    started_at: float
    finished_at: float
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., knowledge_base: _Optional[str] = ..., state: _Optional[str] = ..., added: _Optional[_Iterable[str]] = ..., updated: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., failed: _Optional[_Iterable[_Union[SyncFailure, _Mapping]]] = ..., unchanged: _Optional[int] = ..., error: _Optional[str] = ..., trigger: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateSourceRequest(_message.Message):
    __slots__ = ("knowledge_base", "source")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    source: Source
    def __init__(self, knowledge_base: _Optional[str] = ..., source: _Optional[_Union[Source, _Mapping]] = ...) -> None: ...

class ListSourcesRequest(_message.Message):
    __slots__ = ("knowledge_base",)
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    def __init__(self, knowledge_base: _Optional[str] = ...) -> None: ...

class ListSourcesResponse(_message.Message):
    __slots__ = ("sources",)
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    def __init__(self, sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ...) -> None: ...

class DeleteSourceRequest(_message.Message):
    __slots__ = ("knowledge_base", "name")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    name: str
    def __init__(self, knowledge_base: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteSourceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncSourceRequest(_message.Message):
    __slots__ = ("knowledge_base", "name")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    name: str
    def __init__(self, knowledge_base: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetSyncReportRequest(_message.Message):
    __slots__ = ("knowledge_base", "name", "id")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    name: str
    id: str
    def __init__(self, knowledge_base: _Optional[str] = ..., name: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...
