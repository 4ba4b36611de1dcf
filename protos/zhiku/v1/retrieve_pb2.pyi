from zhiku.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]
    SEARCH_MODE_DENSE: _ClassVar[SearchMode]
    SEARCH_MODE_SPARSE: _ClassVar[SearchMode]

class HybridFusion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HYBRID_FUSION_UNSPECIFIED: _ClassVar[HybridFusion]
    HYBRID_FUSION_DBSF: _ClassVar[HybridFusion]
    HYBRID_FUSION_RRF: _ClassVar[HybridFusion]
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_HYBRID: SearchMode
SEARCH_MODE_DENSE: SearchMode
SEARCH_MODE_SPARSE: SearchMode
HYBRID_FUSION_UNSPECIFIED: HybridFusion
HYBRID_FUSION_DBSF: HybridFusion
HYBRID_FUSION_RRF: HybridFusion

class Point(_message.Message):
    __slots__ = ("id", "vector", "file_name", "chunk_index", "text", "metadata", "parent_id", "parent_text", "acl", "sparse_indices", "sparse_values", "sparse_encoder")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_TEXT_FIELD_NUMBER: _ClassVar[int]
    ACL_FIELD_NUMBER: _ClassVar[int]
    SPARSE_INDICES_FIELD_NUMBER: _ClassVar[int]
    SPARSE_VALUES_FIELD_NUMBER: _ClassVar[int]
    SPARSE_ENCODER_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    file_name: str
    chunk_index: int
    text: str
    metadata: _containers.ScalarMap[str, str]
    parent_id: str
    parent_text: str
    acl: _containers.RepeatedScalarFieldContainer[str]
    sparse_indices: _containers.RepeatedScalarFieldContainer[int]
    sparse_values: _containers.RepeatedScalarFieldContainer[float]
    sparse_encoder: str
    def __init__(self, id: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., file_name: _Optional[str] = ..., chunk_index: _Optional[int] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., parent_id: _Optional[str] = ..., parent_text: _Optional[str] = ..., acl: _Optional[_Iterable[str]] = ..., sparse_indices: _Optional[_Iterable[int]] = ..., sparse_values: _Optional[_Iterable[float]] = ..., sparse_encoder: _Optional[str] = ...) -> None: ...

class EnsureCollectionRequest(_message.Message):
    __slots__ = ("collection", "dimension")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    dimension: int
    def __init__(self, collection: _Optional[str] = ..., dimension: _Optional[int] = ...) -> None: ...

class EnsureCollectionResponse(_message.Message):
    __slots__ = ("created", "sparse_encoder")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SPARSE_ENCODER_FIELD_NUMBER: _ClassVar[int]
    created: bool
    sparse_encoder: str
    def __init__(self, created: _Optional[bool] = ..., sparse_encoder: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "points")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, collection: _Optional[str] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "vector", "top_k", "score_threshold", "file_names", "query_text", "mode", "metadata_filter", "fusion", "reader_acl", "enforce_acl", "knowledge_base")
    class MetadataFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FILE_NAMES_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    READER_ACL_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_ACL_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    score_threshold: float
    file_names: _containers.RepeatedScalarFieldContainer[str]
    query_text: str
    mode: SearchMode
    metadata_filter: _containers.ScalarMap[str, str]
    fusion: HybridFusion
    reader_acl: _containers.RepeatedScalarFieldContainer[str]
    enforce_acl: bool
    knowledge_base: str
    def __init__(self, collection: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., score_threshold: _Optional[float] = ..., file_names: _Optional[_Iterable[str]] = ..., query_text: _Optional[str] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., metadata_filter: _Optional[_Mapping[str, str]] = ..., fusion: _Optional[_Union[HybridFusion, str]] = ..., reader_acl: _Optional[_Iterable[str]] = ..., enforce_acl: _Optional[bool] = ..., knowledge_base: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.Passage]
    def __init__(self, hits: _Optional[_Iterable[_Union[_common_pb2.Passage, _Mapping]]] = ...) -> None: ...

class DeleteByFileRequest(_message.Message):
    __slots__ = ("collection", "file_name", "keep_metadata", "only_metadata")
    class KeepMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OnlyMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    KEEP_METADATA_FIELD_NUMBER: _ClassVar[int]
    ONLY_METADATA_FIELD_NUMBER: _ClassVar[int]
    collection: str
    file_name: str
    keep_metadata: _containers.ScalarMap[str, str]
    only_metadata: _containers.ScalarMap[str, str]
    def __init__(self, collection: _Optional[str] = ..., file_name: _Optional[str] = ..., keep_metadata: _Optional[_Mapping[str, str]] = ..., only_metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteByFileResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class SetFileAclRequest(_message.Message):
    __slots__ = ("collection", "file_name", "acl")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    ACL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    file_name: str
    acl: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., file_name: _Optional[str] = ..., acl: _Optional[_Iterable[str]] = ...) -> None: ...

class SetFileAclResponse(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("exists", "points", "dimension", "sparse")
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    points: int
    dimension: int
    sparse: bool
    def __init__(self, exists: _Optional[bool] = ..., points: _Optional[int] = ..., dimension: _Optional[int] = ..., sparse: _Optional[bool] = ...) -> None: ...
