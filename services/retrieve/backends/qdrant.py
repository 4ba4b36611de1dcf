"""The ``qdrant`` backend: a Qdrant server through qdrant-client's AsyncQdrantClient.

Production points it at a server (``qdrant_url``, gRPC preferred); tests use the client's
local mode (``qdrant_path``), which runs the same client API in-process. Each knowledge base
is one collection with a named dense vector ``dense`` (Cosine) and keyword payload indexes on
``file_name`` and ``acl`` (server only: local mode has no payload indexes).

Dimensions are cached per collection so a search costs one round trip; the cache is only a
hint: a mismatch is re-checked against the server before it is reported, and a server-side
NOT_FOUND or dimension error drops the entry (another replica may have recreated the
collection). Scores: cosine mapped to [0, 1] by :mod:`services.retrieve.scores`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

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
from services.retrieve import scores
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
from services.retrieve.sparse import SPARSE

log = logging.getLogger("zhiku.retrieve.qdrant")

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


def _dense_params(dimension: int) -> models.VectorParams:
    return models.VectorParams(size=dimension, distance=models.Distance.COSINE)


def _file_filter(field: str, match: models.MatchValue | models.MatchAny) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key=field, match=match)])


def _acl_filter(reader: tuple[str, ...]) -> models.Filter:
    """Chunks the reader may see: an acl token in common, or no acl (indexed before access
    lists existed, so an upgrade hides nothing)."""
    return models.Filter(
        should=[
            models.FieldCondition(key=ACL, match=models.MatchAny(any=list(reader))),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=ACL)),
        ]
    )


def _search_filter(query: SearchQuery) -> models.Filter | None:
    """File names (any of), metadata fields (all of) and the reader's access, as one Qdrant filter."""
    must: list[models.Condition] = []
    if query.reader_acl is not None:
        must.append(_acl_filter(query.reader_acl))
    if query.file_names:
        must.append(models.FieldCondition(key=FILE_NAME, match=models.MatchAny(any=list(query.file_names))))
    for key, value in query.metadata_filter:
        must.append(models.FieldCondition(key=f"{METADATA}.{key}", match=models.MatchValue(value=value)))
    return models.Filter(must=must) if must else None


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
        self._dimensions: dict[str, int] = {}
        # Whether each known collection has the sparse vector (older ones are dense only).
        self._sparse: dict[str, bool] = {}
        # Collections whose ``acl`` keyword index this process made sure of.
        self._acl_indexed: set[str] = set()

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
            extra={"fields": {"mode": "local" if self._local else "server", "url": settings.qdrant_url}},
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

    @asynccontextmanager
    async def _calling(self, collection: str) -> AsyncIterator[None]:
        try:
            yield
        except ZhikuError as error:
            if isinstance(error, NotFound | InvalidArgument):
                self._dimensions.pop(collection, None)
            raise
        except Exception as error:
            translated = _translate(error, collection)
            if isinstance(translated, NotFound | InvalidArgument):
                self._dimensions.pop(collection, None)
            raise translated from error

    # ----- dimensions -----

    async def _fetch_dimension(self, collection: str) -> int:
        async with self._calling(collection):
            info = await self.client.get_collection(collection)
        vectors = info.config.params.vectors
        if not isinstance(vectors, dict) or DENSE not in vectors:
            raise FailedPrecondition(f"collection {collection!r} has no {DENSE!r} vector: not made by zhiku")
        dimension = vectors[DENSE].size
        self._dimensions[collection] = dimension
        self._sparse[collection] = SPARSE in (info.config.params.sparse_vectors or {})
        return dimension

    async def _dimension(self, collection: str) -> int:
        cached = self._dimensions.get(collection)
        return cached if cached is not None else await self._fetch_dimension(collection)

    async def _check_dimension(self, collection: str, got: int, what: str) -> None:
        if await self._dimension(collection) != got:
            check_dimension(collection, await self._fetch_dimension(collection), got, what)

    # ----- RetrieveBackend -----

    async def ensure_collection(self, collection: str, dimension: int) -> bool:
        created = False
        try:
            existing = await self._fetch_dimension(collection)
        except NotFound:
            try:
                async with self._calling(collection):
                    await self.client.create_collection(
                        collection,
                        vectors_config={DENSE: _dense_params(dimension)},
                        # The server weights terms by IDF over the collection (BM25, sparse.py).
                        sparse_vectors_config={
                            SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                        },
                    )
                created = True
            except ZhikuError as error:
                if not _is_conflict(error.__cause__ or error):  # lost a race: it exists now
                    raise
            if created and not self._local:
                async with self._calling(collection):
                    await self.client.create_payload_index(
                        collection, FILE_NAME, models.PayloadSchemaType.KEYWORD, wait=True
                    )
            existing = await self._fetch_dimension(collection)
        if not self._local and collection not in self._acl_indexed:
            # Also on collections made before access lists (idempotent on the server).
            async with self._calling(collection):
                await self.client.create_payload_index(
                    collection, ACL, models.PayloadSchemaType.KEYWORD, wait=True
                )
            self._acl_indexed.add(collection)
        if existing != dimension:
            raise InvalidArgument(
                f"collection {collection!r} exists with dimension {existing}, not {dimension}"
            )
        if created:
            log.info("created collection %s", collection, extra={"fields": {"dimension": dimension}})
        return created

    async def upsert(self, collection: str, points: Sequence[PointRecord]) -> int:
        for point in points:
            await self._check_dimension(collection, len(point.vector), f"point {point.id}")
        if not points:
            await self._dimension(collection)  # NotFound for an unknown collection
            return 0
        batch = self._settings.qdrant_upsert_batch
        async with self._calling(collection):
            for start in range(0, len(points), batch):
                structs = [
                    models.PointStruct(id=p.id, vector=self._vectors(collection, p), payload=p.payload())
                    for p in points[start : start + batch]
                ]
                await self.client.upsert(collection, points=structs, wait=True)
        return len(points)

    def _vectors(self, collection: str, point: PointRecord) -> dict[str, models.Vector]:
        if self._sparse.get(collection) and point.sparse:
            sparse = models.SparseVector(indices=point.sparse.indices, values=point.sparse.values)
            return {DENSE: point.vector, SPARSE: sparse}
        return {DENSE: point.vector}

    async def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        if query.mode != MODE_SPARSE:
            await self._check_dimension(collection, len(query.vector), "query")
        else:
            await self._dimension(collection)  # NotFound, and whether it has a sparse vector
        if query.mode != MODE_DENSE and not self._sparse.get(collection):
            query = dense_fallback(collection, query)
        if query.mode != MODE_DENSE and not query.sparse:
            if query.mode == MODE_SPARSE:
                return []  # no words in the query text: nothing can match lexically
            query = query.without_sparse()
        query_filter = _search_filter(query)
        async with self._calling(collection):
            if query.mode == MODE_DENSE:
                response = await self.client.query_points(
                    collection,
                    query=query.vector,
                    using=DENSE,
                    limit=query.top_k,
                    query_filter=query_filter,
                    score_threshold=scores.cosine_floor(query.score_threshold),
                    with_payload=True,
                )
            else:
                response = await self._lexical(collection, query, query_filter)
        hits = [
            Hit.from_payload(
                p.id,
                scores.map_score(query.mode, p.score, query.fusion),
                p.payload,
                scores.hit_dense_score(query, p.score, p.vector),
            )
            for p in response.points
        ]
        return scores.rank_and_keep(hits, query.score_threshold)

    async def _lexical(
        self, collection: str, query: SearchQuery, query_filter: models.Filter | None
    ) -> models.QueryResponse:
        """Sparse search, or hybrid: dense and sparse candidates fused on the server (DBSF or RRF)."""
        sparse = models.SparseVector(indices=query.sparse.indices, values=query.sparse.values)
        if query.mode == MODE_SPARSE:
            return await self.client.query_points(
                collection,
                query=sparse,
                using=SPARSE,
                limit=query.top_k,
                query_filter=query_filter,
                with_payload=True,
            )
        candidates = max(query.top_k, self._settings.hybrid_candidates)
        return await self.client.query_points(
            collection,
            prefetch=[
                models.Prefetch(query=query.vector, using=DENSE, limit=candidates, filter=query_filter),
                models.Prefetch(query=sparse, using=SPARSE, limit=candidates, filter=query_filter),
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
        )

    async def delete_by_file(
        self,
        collection: str,
        file_name: str,
        keep: tuple[tuple[str, str], ...] = (),
        only: tuple[tuple[str, str], ...] = (),
    ) -> int:
        await self._dimension(collection)
        selector = _file_filter(FILE_NAME, models.MatchValue(value=file_name))
        for key, value in only:
            selector.must.append(  # type: ignore[union-attr]  # _file_filter builds a list
                models.FieldCondition(key=f"{METADATA}.{key}", match=models.MatchValue(value=value))
            )
        if keep:
            selector.must_not = [
                models.FieldCondition(key=f"{METADATA}.{key}", match=models.MatchValue(value=value))
                for key, value in keep
            ]
        async with self._calling(collection):
            matching = (await self.client.count(collection, count_filter=selector, exact=True)).count
            if matching:
                await self.client.delete(
                    collection, points_selector=models.FilterSelector(filter=selector), wait=True
                )
        return matching

    async def set_file_acl(self, collection: str, file_name: str, acl: tuple[str, ...]) -> int:
        await self._dimension(collection)
        selector = _file_filter(FILE_NAME, models.MatchValue(value=file_name))
        async with self._calling(collection):
            matching = (await self.client.count(collection, count_filter=selector, exact=True)).count
            if matching:
                await self.client.set_payload(
                    collection,
                    payload={ACL: list(acl)},
                    points=models.FilterSelector(filter=selector),
                    wait=True,
                )
        return matching

    async def drop_collection(self, collection: str) -> bool:
        self._dimensions.pop(collection, None)
        self._acl_indexed.discard(collection)
        async with self._calling(collection):
            if not await self.client.collection_exists(collection):
                return False
            return bool(await self.client.delete_collection(collection))

    async def stats(self, collection: str) -> CollectionStats:
        try:
            dimension = await self._fetch_dimension(collection)
        except NotFound:
            return CollectionStats(exists=False)
        async with self._calling(collection):
            points = (await self.client.count(collection, exact=True)).count
        return CollectionStats(
            exists=True, points=points, dimension=dimension, sparse=self._sparse.get(collection, False)
        )
