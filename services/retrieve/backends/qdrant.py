"""The ``qdrant`` backend: a Qdrant server (or cluster) through qdrant-client's AsyncQdrantClient.

Production points it at a server (``qdrant_url``, gRPC preferred); tests use the client's
local mode (``qdrant_path``), which runs the same client API in-process. A knowledge base is
a collection of its own or a share of a shared collection (:mod:`.qdrant_tenancy`, chosen by
``qdrant_layout``; file chats always share); either way its points carry a named dense vector
``dense`` (Cosine), the sparse BM25 vector and the ``acl`` reader tokens, laid out for the
cluster by :mod:`.qdrant_schema` (keyword indexes on ``file_name`` and ``acl``, plus the ``kb``
tenant index in a shared collection; server only: local mode has no payload indexes).

Writes wait for the server (``wait=true``) with the configured ordering, so a count right
after a write is exact, which the catalog's chunk counts rely on. Every call is retried on
transient failures (:mod:`.qdrant_retry`) and then mapped onto the domain errors.

Dimensions are cached per collection, and shared knowledge bases' places per name, so a search
costs one round trip; the caches are only hints: a mismatch is re-checked against the server
before it is reported, writes and Stats look the place up afresh, and a server-side NOT_FOUND
or dimension error drops the entries (another replica may have recreated the collection).
Scores: cosine mapped to [0, 1] by :mod:`services.retrieve.scores`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

import grpc
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.common.errors import (
    AlreadyExists,
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ZhikuError,
)
from services.common.sparse import SPARSE
from services.retrieve import scores
from services.retrieve.backends import qdrant_schema as schema
from services.retrieve.backends.qdrant_retry import retrying
from services.retrieve.backends.qdrant_tenancy import (
    Place,
    is_shared_collection,
    marker_id,
    shared_collection,
    uses_shared,
)
from services.retrieve.config import RetrieveSettings
from services.retrieve.domain import (
    ACL,
    DENSE,
    FILE_NAME,
    FUSION_RRF,
    METADATA,
    MODE_DENSE,
    MODE_SPARSE,
    CollectionStats,
    Hit,
    PointRecord,
    SearchQuery,
    check_dimension,
    dense_fallback,
)

log = logging.getLogger("zhiku.retrieve.qdrant")

T = TypeVar("T")

_NOT_FOUND_HTTP = 404
_BAD_REQUEST_HTTP = (400, 422)
_CONFLICT_HTTP = 409


def _translate(error: Exception, collection: str) -> ZhikuError:
    """Map a qdrant-client failure (REST, gRPC or local mode) onto the domain errors."""
    if isinstance(error, ZhikuError):
        return error
    if isinstance(error, UnexpectedResponse):
        if error.status_code == _NOT_FOUND_HTTP:
            return NotFound(f"collection {collection!r} not found")
        if error.status_code in _BAD_REQUEST_HTTP:
            return InvalidArgument(f"qdrant rejected the request: {error.content[:300]!r}")
        return DependencyUnavailable(f"qdrant answered {error.status_code}: {error.content[:300]!r}")
    if isinstance(error, grpc.RpcError):
        code, details = error.code(), error.details() or ""
        if code is grpc.StatusCode.NOT_FOUND:
            return NotFound(f"collection {collection!r} not found")
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"qdrant rejected the request: {details}")
        if code is grpc.StatusCode.ALREADY_EXISTS:
            return AlreadyExists(f"qdrant: {details}")
        return DependencyUnavailable(f"qdrant call failed ({code.name}): {details}")
    if isinstance(error, ResponseHandlingException | OSError):
        return DependencyUnavailable(f"qdrant unreachable: {error}")
    if isinstance(error, ValueError) and "not found" in str(error):  # local mode
        return NotFound(f"collection {collection!r} not found")
    if isinstance(error, ValueError):  # local mode validation
        return InvalidArgument(str(error))
    return DependencyUnavailable(f"qdrant call failed: {type(error).__name__}: {error}")


def _acl_filter(reader: tuple[str, ...]) -> models.Filter:
    """Chunks the reader may see: an acl token in common, or no acl (indexed before access
    lists existed, so an upgrade hides nothing)."""
    return models.Filter(
        should=[
            models.FieldCondition(key=ACL, match=models.MatchAny(any=list(reader))),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=ACL)),
        ]
    )


def _search_filter(query: SearchQuery, place: Place) -> models.Filter | None:
    """The one filter of a search: the knowledge base (in a shared collection), the reader's
    access, file names (any of) and metadata fields (all of). Every search condition joins here,
    so dense, sparse and both legs of hybrid see the same points."""
    must: list[models.Condition] = []
    if query.reader_acl is not None:
        must.append(_acl_filter(query.reader_acl))
    if query.file_names:
        must.append(models.FieldCondition(key=FILE_NAME, match=models.MatchAny(any=list(query.file_names))))
    for key, value in query.metadata_filter:
        must.append(models.FieldCondition(key=f"{METADATA}.{key}", match=models.MatchValue(value=value)))
    return place.scope(must)


def _file_filter(
    place: Place, file_name: str, keep: tuple[tuple[str, str], ...], only: tuple[tuple[str, str], ...]
) -> models.Filter:
    """The points of one file, with all ``only`` metadata pairs and none of the ``keep`` ones."""
    must: list[models.Condition] = [
        models.FieldCondition(key=FILE_NAME, match=models.MatchValue(value=file_name))
    ]
    must += [
        models.FieldCondition(key=f"{METADATA}.{key}", match=models.MatchValue(value=value))
        for key, value in only
    ]
    must_not: list[models.Condition] = [
        models.FieldCondition(key=f"{METADATA}.{key}", match=models.MatchValue(value=value))
        for key, value in keep
    ]
    selector = place.scope(must, must_not)
    if selector is None:  # pragma: no cover - must always holds the file condition
        raise RuntimeError("empty file filter")
    return selector


def _is_conflict(error: BaseException) -> bool:
    if isinstance(error, UnexpectedResponse):
        return error.status_code == _CONFLICT_HTTP
    if isinstance(error, grpc.RpcError):
        return error.code() is grpc.StatusCode.ALREADY_EXISTS
    return isinstance(error, ValueError) and "already exists" in str(error)


class QdrantBackend:
    name = "qdrant"

    def __init__(self, settings: RetrieveSettings) -> None:
        self._settings = settings
        self._local = settings.qdrant_path is not None
        self._client: AsyncQdrantClient | None = None
        # Per physical collection: its dense dimension, and whether it has the sparse vector
        # (older ones are dense only).
        self._dimensions: dict[str, int] = {}
        self._sparse: dict[str, bool] = {}
        # Shared knowledge bases found so far: name -> place (a hint, see the module docstring).
        self._shared: dict[str, Place] = {}
        # Collections whose payload indexes this process made sure of (``acl`` came later than
        # the others, so a collection made before access lists gets it when opened).
        self._indexed: set[str] = set()
        self._ordering = schema.write_ordering(settings)
        self._consistency = schema.read_consistency(settings)

    # ----- lifecycle -----

    async def start(self) -> None:
        settings = self._settings
        if settings.qdrant_path == ":memory:":
            self._client = AsyncQdrantClient(location=":memory:")
        elif settings.qdrant_path is not None:
            self._client = AsyncQdrantClient(path=settings.qdrant_path)
        else:
            api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            self._client = AsyncQdrantClient(
                url=settings.qdrant_url,
                api_key=api_key,
                prefer_grpc=settings.qdrant_prefer_grpc,
                grpc_port=settings.qdrant_grpc_port,
                timeout=int(settings.qdrant_timeout_s),
                # The check would block start-up on a server that is not up yet; calls report
                # UNAVAILABLE instead and readiness follows the server.
                check_compatibility=False,
            )
        log.info(
            "qdrant backend ready",
            extra={
                "fields": {
                    "mode": "local" if self._local else "server",
                    "url": settings.qdrant_url,
                    "layout": settings.qdrant_layout,
                }
            },
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> AsyncQdrantClient:
        if self._client is None:
            raise DependencyUnavailable("retrieve qdrant backend is not started")
        return self._client

    async def _call(self, kb: str, call: Callable[[], Awaitable[T]], collection: str | None = None) -> T:
        """Run one client call with retries on transient failures, then map a failure onto the
        domain errors (named after the knowledge base ``kb``, living in ``collection``)."""
        try:
            return await retrying(self._settings)(call)
        except Exception as error:
            translated = _translate(error, kb)
            if isinstance(translated, NotFound | InvalidArgument):
                self._forget(kb, collection or kb)
            if translated is error:
                raise
            raise translated from error

    def _forget(self, kb: str, collection: str) -> None:
        self._dimensions.pop(collection, None)
        self._indexed.discard(collection)
        self._shared.pop(kb, None)

    # ----- places and dimensions -----

    async def _place(self, kb: str, fresh: bool = False) -> Place:
        """Where ``kb`` lives; NotFound for a shared knowledge base that does not exist.
        ``fresh`` checks a cached shared place against the server (writes and Stats do)."""
        if not uses_shared(self._settings, kb):
            return Place(kb, kb, shared=False)
        cached = self._shared.get(kb)
        if cached is not None and (not fresh or await self._has_marker(cached)):
            return cached
        place = await self._find_shared(kb)
        if place is None:
            self._shared.pop(kb, None)
            raise NotFound(f"collection {kb!r} not found")
        return place

    async def _has_marker(self, place: Place) -> bool:
        try:
            found = await self._call(
                place.kb,
                functools.partial(
                    self.client.retrieve,
                    place.collection,
                    ids=[marker_id(place.kb)],
                    with_payload=False,
                    with_vectors=False,
                    consistency=self._consistency,
                ),
                place.collection,
            )
        except NotFound:  # the shared collection itself is gone
            return False
        return bool(found)

    async def _find_shared(self, kb: str) -> Place | None:
        """Look ``kb``'s marker up in every shared collection (one per dimension in use)."""
        listing = await self._call(kb, self.client.get_collections)
        names = sorted(c.name for c in listing.collections if is_shared_collection(self._settings, c.name))
        for name in names:
            place = Place(kb, name, shared=True)
            if await self._has_marker(place):
                self._shared[kb] = place
                return place
        return None

    async def _fetch_dimension(self, kb: str, collection: str) -> int:
        info = await self._call(kb, functools.partial(self.client.get_collection, collection), collection)
        vectors = info.config.params.vectors
        if not isinstance(vectors, dict) or DENSE not in vectors:
            raise FailedPrecondition(f"collection {kb!r} has no {DENSE!r} vector: not made by zhiku")
        dimension = vectors[DENSE].size
        self._dimensions[collection] = dimension
        self._sparse[collection] = SPARSE in (info.config.params.sparse_vectors or {})
        if not self._local and collection not in self._indexed:
            await self._create_indexes(kb, collection, skip=set(info.payload_schema or {}))
        return dimension

    async def _create_indexes(self, kb: str, collection: str, skip: Collection[str] = ()) -> None:
        """Create the payload indexes of ``collection`` (:func:`.qdrant_schema.payload_indexes`)
        that are not in ``skip``: at creation, and when a collection made by an earlier release
        (without ``acl``) is opened. Creating an index that exists is harmless on the server."""
        for field, field_schema in schema.payload_indexes(is_shared_collection(self._settings, collection)):
            if field in skip:
                continue
            await self._call(
                kb,
                functools.partial(
                    self.client.create_payload_index,
                    collection,
                    field,
                    field_schema=field_schema,
                    wait=True,
                    ordering=self._ordering,
                ),
                collection,
            )
        self._indexed.add(collection)

    async def _dimension(self, place: Place) -> int:
        cached = self._dimensions.get(place.collection)
        return cached if cached is not None else await self._fetch_dimension(place.kb, place.collection)

    async def _check_dimension(self, place: Place, got: int, what: str) -> None:
        if await self._dimension(place) != got:
            expected = await self._fetch_dimension(place.kb, place.collection)
            check_dimension(place.kb, expected, got, what)

    # ----- creating collections -----

    async def _create_collection(self, kb: str, collection: str, dimension: int, shared: bool) -> bool:
        """Create ``collection`` with its payload indexes; False when it already existed (a
        lost race, or a retried create whose first attempt went through)."""
        params = schema.collection_params(self._settings, dimension, shared)
        created = True
        try:
            await self._call(kb, functools.partial(self.client.create_collection, collection, **params))
        except ZhikuError as error:
            if not _is_conflict(error.__cause__ or error):
                raise
            created = False
        if not self._local:  # local mode has no payload indexes; creating one is idempotent
            await self._create_indexes(kb, collection)
        return created

    # ----- RetrieveBackend -----

    async def ensure_collection(self, collection: str, dimension: int) -> bool:
        if uses_shared(self._settings, collection):
            created = await self._ensure_shared(collection, dimension)
        else:
            created = await self._ensure_own(collection, dimension)
        if created:
            log.info("created collection %s", collection, extra={"fields": {"dimension": dimension}})
        return created

    async def _ensure_own(self, kb: str, dimension: int) -> bool:
        created = False
        try:
            existing = await self._fetch_dimension(kb, kb)
        except NotFound:
            created = await self._create_collection(kb, kb, dimension, shared=False)
            existing = await self._fetch_dimension(kb, kb)
        if existing != dimension:
            raise InvalidArgument(f"collection {kb!r} exists with dimension {existing}, not {dimension}")
        return created

    async def _ensure_shared(self, kb: str, dimension: int) -> bool:
        """Make ``kb`` exist in the shared collection of ``dimension``: write its marker."""
        try:
            place = await self._place(kb, fresh=True)
        except NotFound:
            pass
        else:
            existing = await self._dimension(place)
            if existing != dimension:
                raise InvalidArgument(f"collection {kb!r} exists with dimension {existing}, not {dimension}")
            return False
        place = Place(kb, shared_collection(self._settings, dimension), shared=True)
        exists = await self._call(kb, functools.partial(self.client.collection_exists, place.collection))
        if not exists:
            await self._create_collection(kb, place.collection, dimension, shared=True)
        await self._fetch_dimension(kb, place.collection)
        await self._call(
            kb,
            functools.partial(
                self.client.upsert,
                place.collection,
                points=[place.marker()],
                wait=True,
                ordering=self._ordering,
            ),
            place.collection,
        )
        self._shared[kb] = place
        return True

    async def has_sparse(self, collection: str) -> bool:
        place = await self._place(collection)
        await self._dimension(place)  # reads the collection's vectors once, NotFound if missing
        return self._sparse.get(place.collection, False)

    async def upsert(self, collection: str, points: Sequence[PointRecord]) -> int:
        place = await self._place(collection, fresh=True)
        for point in points:
            await self._check_dimension(place, len(point.vector), f"point {point.id}")
        if not points:
            await self._dimension(place)  # NotFound for an unknown collection
            return 0
        batch = self._settings.qdrant_upsert_batch
        for start in range(0, len(points), batch):
            structs = [
                models.PointStruct(
                    id=place.point_id(p.id), vector=self._vectors(place, p), payload=place.payload(p)
                )
                for p in points[start : start + batch]
            ]
            await self._call(
                collection,
                functools.partial(
                    self.client.upsert, place.collection, points=structs, wait=True, ordering=self._ordering
                ),
                place.collection,
            )
        return len(points)

    def _vectors(self, place: Place, point: PointRecord) -> dict[str, models.Vector]:
        if self._sparse.get(place.collection) and point.sparse:
            sparse = models.SparseVector(indices=point.sparse.indices, values=point.sparse.values)
            return {DENSE: point.vector, SPARSE: sparse}
        return {DENSE: point.vector}

    async def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        place = await self._place(collection)
        if query.mode != MODE_SPARSE:
            await self._check_dimension(place, len(query.vector), "query")
        else:
            await self._dimension(place)  # NotFound, and whether it has a sparse vector
        if query.mode != MODE_DENSE and not self._sparse.get(place.collection):
            query = dense_fallback(collection, query)
        if query.mode != MODE_DENSE and not query.sparse:
            if query.mode == MODE_SPARSE:
                return []  # no words in the query text: nothing can match lexically
            query = query.without_sparse()
        query_filter = _search_filter(query, place)
        call: Callable[[], Awaitable[models.QueryResponse]]
        if query.mode == MODE_DENSE:
            call = functools.partial(
                self.client.query_points,
                place.collection,
                query=query.vector,
                using=DENSE,
                limit=query.top_k,
                query_filter=query_filter,
                search_params=schema.dense_search_params(self._settings),
                score_threshold=scores.cosine_floor(query.score_threshold),
                with_payload=True,
                consistency=self._consistency,
            )
        else:
            call = self._lexical(place, query, query_filter)
        response = await self._call(collection, call, place.collection)
        hits = [
            Hit.from_payload(
                place.chunk_id(p.id, p.payload),
                scores.map_score(query.mode, p.score, query.fusion),
                p.payload,
                scores.hit_dense_score(query, p.score, p.vector),
            )
            for p in response.points
        ]
        return scores.rank_and_keep(hits, query.score_threshold)

    def _lexical(
        self, place: Place, query: SearchQuery, query_filter: models.Filter | None
    ) -> Callable[[], Awaitable[models.QueryResponse]]:
        """Sparse search, or hybrid: dense and sparse candidates fused on the server (DBSF or RRF).
        In a shared collection the sparse IDF is taken over the knowledge base's own points."""
        sparse = models.SparseVector(indices=query.sparse.indices, values=query.sparse.values)
        corpus = place.scope() if place.shared and self._settings.qdrant_tenant_idf else None
        sparse_params = schema.sparse_search_params(corpus)
        if query.mode == MODE_SPARSE:
            return functools.partial(
                self.client.query_points,
                place.collection,
                query=sparse,
                using=SPARSE,
                limit=query.top_k,
                query_filter=query_filter,
                search_params=sparse_params,
                with_payload=True,
                consistency=self._consistency,
            )
        candidates = max(query.top_k, self._settings.hybrid_candidates)
        return functools.partial(
            self.client.query_points,
            place.collection,
            prefetch=[
                models.Prefetch(
                    query=query.vector,
                    using=DENSE,
                    limit=candidates,
                    filter=query_filter,
                    params=schema.dense_search_params(self._settings),
                ),
                models.Prefetch(
                    query=sparse, using=SPARSE, limit=candidates, filter=query_filter, params=sparse_params
                ),
            ],
            query=(
                models.RrfQuery(rrf=models.Rrf(k=scores.RRF_K))
                if query.fusion == FUSION_RRF
                else models.FusionQuery(fusion=models.Fusion.DBSF)
            ),
            limit=query.top_k,
            query_filter=query_filter,
            with_payload=True,
            with_vectors=[DENSE],  # for each hit's dense_score (scores.py)
            consistency=self._consistency,
        )

    async def delete_by_file(
        self,
        collection: str,
        file_name: str,
        keep: tuple[tuple[str, str], ...] = (),
        only: tuple[tuple[str, str], ...] = (),
    ) -> int:
        place = await self._place(collection)
        await self._dimension(place)
        selector = _file_filter(place, file_name, keep, only)
        matching = await self._count(place, selector)
        if matching:
            await self._delete(place, selector)
        return matching

    async def set_file_acl(self, collection: str, file_name: str, acl: tuple[str, ...]) -> int:
        place = await self._place(collection, fresh=True)
        await self._dimension(place)  # NotFound for an unknown collection
        selector = _file_filter(place, file_name, (), ())
        matching = await self._count(place, selector)
        if matching:
            await self._call(
                place.kb,
                functools.partial(
                    self.client.set_payload,
                    place.collection,
                    payload={ACL: list(acl)},
                    points=models.FilterSelector(filter=selector),
                    wait=True,
                    ordering=self._ordering,
                ),
                place.collection,
            )
        return matching

    async def _count(self, place: Place, selector: models.Filter | None) -> int:
        result = await self._call(
            place.kb,
            functools.partial(self.client.count, place.collection, count_filter=selector, exact=True),
            place.collection,
        )
        return result.count

    async def _delete(self, place: Place, selector: models.Filter) -> None:
        await self._call(
            place.kb,
            functools.partial(
                self.client.delete,
                place.collection,
                points_selector=models.FilterSelector(filter=selector),
                wait=True,
                ordering=self._ordering,
            ),
            place.collection,
        )

    async def drop_collection(self, collection: str) -> bool:
        if not uses_shared(self._settings, collection):
            return await self._drop_own(collection)
        dropped = False
        try:
            place = await self._place(collection, fresh=True)
        except NotFound:
            pass
        else:
            self._shared.pop(collection, None)
            # The marker goes with the points: the knowledge base is gone in one delete.
            await self._delete(place, models.Filter(must=[place.tenant]))
            dropped = True
        if self._settings.qdrant_layout == "per_collection":
            # A file chat made before it moved to the shared collection had its own one.
            dropped = await self._drop_own(collection) or dropped
        return dropped

    async def _drop_own(self, kb: str) -> bool:
        self._dimensions.pop(kb, None)
        self._indexed.discard(kb)
        if not await self._call(kb, functools.partial(self.client.collection_exists, kb)):
            return False
        return bool(await self._call(kb, functools.partial(self.client.delete_collection, kb)))

    async def stats(self, collection: str) -> CollectionStats:
        try:
            place = await self._place(collection, fresh=True)
            dimension = await self._fetch_dimension(collection, place.collection)
        except NotFound:
            return CollectionStats(exists=False)
        points = await self._count(place, place.chunks())
        return CollectionStats(
            exists=True, points=points, dimension=dimension, sparse=self._sparse.get(place.collection, False)
        )
