"""gRPC RetrieveService: a thin servicer over the configured vector store backend.

The servicer validates names and converts messages (:mod:`.names`, :mod:`.domain`); the
backend owns storage, existence and dimension checks. Every score a caller sees is a
similarity in [0, 1], higher is better (:mod:`.scores`). Run: ``python -m services.retrieve.server``.
"""

from __future__ import annotations

import asyncio

import grpc

from services.common.errors import InvalidArgument
from services.common.grpc_server import ServiceSpec, run_service
from services.common.names import check_kb_name
from services.common.service_names import RETRIEVE_SERVICE
from services.common.sparse import SparseEncoder
from services.retrieve.backends import create_backend
from services.retrieve.backends.base import RetrieveBackend
from services.retrieve.config import RetrieveSettings
from services.retrieve.domain import OPEN_ACL, SearchQuery, check_acl, points_from_pb
from services.retrieve.metrics import DELETED_POINTS, SEARCH_HITS, UPSERTED_POINTS
from zhiku.v1 import retrieve_pb2, retrieve_pb2_grpc


class RetrieveServicer(retrieve_pb2_grpc.RetrieveServiceServicer):
    def __init__(self, backend: RetrieveBackend, settings: RetrieveSettings) -> None:
        self._backend = backend
        self._settings = settings
        self._encoder = SparseEncoder(
            settings.sparse_k1, settings.sparse_b, settings.sparse_avg_len, settings.sparse_tokenizer
        )

    async def EnsureCollection(
        self,
        request: retrieve_pb2.EnsureCollectionRequest,
        context: grpc.aio.ServicerContext[
            retrieve_pb2.EnsureCollectionRequest, retrieve_pb2.EnsureCollectionResponse
        ],
    ) -> retrieve_pb2.EnsureCollectionResponse:
        name = check_kb_name(request.collection)
        limit = self._settings.max_dimension
        if not 1 <= request.dimension <= limit:
            raise InvalidArgument(f"dimension must be in 1..{limit}, got {request.dimension}")
        created = await self._backend.ensure_collection(name, request.dimension)
        # Writers encode the sparse vectors with this spec (domain.sparse_of), sparing this
        # process the work; a collection made before sparse vectors needs none.
        spec = self._encoder.spec if await self._backend.has_sparse(name) else ""
        return retrieve_pb2.EnsureCollectionResponse(created=created, sparse_encoder=spec)

    async def Upsert(
        self,
        request: retrieve_pb2.UpsertRequest,
        context: grpc.aio.ServicerContext[retrieve_pb2.UpsertRequest, retrieve_pb2.UpsertResponse],
    ) -> retrieve_pb2.UpsertResponse:
        name = check_kb_name(request.collection)
        # Encoding the points that come without the writer's sparse vector (domain.sparse_of)
        # takes milliseconds a batch: keep it off the event loop.
        points = await asyncio.to_thread(points_from_pb, request.points, self._encoder)
        upserted = await self._backend.upsert(name, points)
        UPSERTED_POINTS.labels(self._backend.name).inc(upserted)
        return retrieve_pb2.UpsertResponse(upserted=upserted)

    async def Search(
        self,
        request: retrieve_pb2.SearchRequest,
        context: grpc.aio.ServicerContext[retrieve_pb2.SearchRequest, retrieve_pb2.SearchResponse],
    ) -> retrieve_pb2.SearchResponse:
        name = check_kb_name(request.collection)
        query = SearchQuery.from_pb(
            request,
            self._settings.default_top_k,
            self._settings.max_top_k,
            self._encoder,
            self._settings.hybrid_fusion,
        )
        hits = await self._backend.search(name, query)
        SEARCH_HITS.labels(self._backend.name).observe(len(hits))
        return retrieve_pb2.SearchResponse(hits=[hit.to_pb(name) for hit in hits])

    async def DeleteByFile(
        self,
        request: retrieve_pb2.DeleteByFileRequest,
        context: grpc.aio.ServicerContext[
            retrieve_pb2.DeleteByFileRequest, retrieve_pb2.DeleteByFileResponse
        ],
    ) -> retrieve_pb2.DeleteByFileResponse:
        name = check_kb_name(request.collection)
        if not request.file_name:
            raise InvalidArgument("file_name is empty")
        keep = tuple(sorted(request.keep_metadata.items()))
        only = tuple(sorted(request.only_metadata.items()))
        if any(not key for key, _ in keep + only):
            raise InvalidArgument("keep_metadata and only_metadata must not contain an empty key")
        deleted = await self._backend.delete_by_file(name, request.file_name, keep, only)
        DELETED_POINTS.labels(self._backend.name).inc(deleted)
        return retrieve_pb2.DeleteByFileResponse(deleted=deleted)

    async def SetFileAcl(
        self,
        request: retrieve_pb2.SetFileAclRequest,
        context: grpc.aio.ServicerContext[retrieve_pb2.SetFileAclRequest, retrieve_pb2.SetFileAclResponse],
    ) -> retrieve_pb2.SetFileAclResponse:
        name = check_kb_name(request.collection)
        if not request.file_name:
            raise InvalidArgument("file_name is empty")
        acl = check_acl(request.acl, "acl")
        if not acl:
            raise InvalidArgument(f"acl is empty: use [{OPEN_ACL!r}] to open the file to every reader")
        updated = await self._backend.set_file_acl(name, request.file_name, acl)
        return retrieve_pb2.SetFileAclResponse(updated=updated)

    async def DropCollection(
        self,
        request: retrieve_pb2.DropCollectionRequest,
        context: grpc.aio.ServicerContext[
            retrieve_pb2.DropCollectionRequest, retrieve_pb2.DropCollectionResponse
        ],
    ) -> retrieve_pb2.DropCollectionResponse:
        name = check_kb_name(request.collection)
        return retrieve_pb2.DropCollectionResponse(dropped=await self._backend.drop_collection(name))

    async def Stats(
        self,
        request: retrieve_pb2.StatsRequest,
        context: grpc.aio.ServicerContext[retrieve_pb2.StatsRequest, retrieve_pb2.StatsResponse],
    ) -> retrieve_pb2.StatsResponse:
        name = check_kb_name(request.collection)
        return (await self._backend.stats(name)).to_pb()


def build_spec(settings: RetrieveSettings, backend: RetrieveBackend | None = None) -> ServiceSpec:
    """The service for the shared bootstrap; pass ``backend`` to keep a handle on it (bench, tests)."""
    store = backend if backend is not None else create_backend(settings)
    servicer = RetrieveServicer(store, settings)
    return ServiceSpec(
        name="retrieve",
        service_names=[RETRIEVE_SERVICE],
        register=lambda server: retrieve_pb2_grpc.add_RetrieveServiceServicer_to_server(servicer, server),
        startup=store.start,
        shutdown=[store.close],
    )


def main() -> None:
    settings = RetrieveSettings()
    run_service(lambda: build_spec(settings), settings)


if __name__ == "__main__":
    main()
