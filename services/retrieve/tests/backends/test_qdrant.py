"""Qdrant backend behaviour the local-mode congruence tests cannot show: a server that is down,
or one that fails (retried on 5xx and UNAVAILABLE-like codes, never on 4xx)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.retrieve.backends.qdrant_tenancy import marker_id
from services.retrieve.tests.conftest import expect_error, make_settings, running
from zhiku.v1 import retrieve_pb2 as pb


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("prefer_grpc", [False, True], ids=["rest", "grpc"])
async def test_unreachable_server_is_unavailable_and_service_stays_up(
    tmp_path: Path, prefer_grpc: bool
) -> None:
    port = closed_port()
    settings = make_settings(
        "qdrant",
        tmp_path,
        qdrant_path=None,
        qdrant_url=f"http://127.0.0.1:{port}",
        qdrant_grpc_port=port,
        qdrant_prefer_grpc=prefer_grpc,
        qdrant_timeout_s=2,
    )
    async with running(settings) as served:
        calls = [
            served.stub.EnsureCollection(pb.EnsureCollectionRequest(collection="kb", dimension=4)),
            served.stub.Search(pb.SearchRequest(collection="kb", vector=[1.0, 0, 0, 0])),
            served.stub.Stats(pb.StatsRequest(collection="kb")),
        ]
        for call in calls:
            await expect_error(call, grpc.StatusCode.UNAVAILABLE, "qdrant")
        # Validation still answers without the store, and the process keeps serving.
        await expect_error(
            served.stub.Stats(pb.StatsRequest(collection="../kb")), grpc.StatusCode.INVALID_ARGUMENT
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{served.service.port}")
        try:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        finally:
            await channel.close()
        assert health.status == health_pb2.HealthCheckResponse.SERVING


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and counts the requests."""

    def _answer(self) -> None:
        server = self.server
        assert isinstance(server, _CountingServer)
        server.requests += 1
        body = json.dumps({"status": {"error": "scripted"}, "time": 0}).encode()
        self.send_response(server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


class _CountingServer(http.server.ThreadingHTTPServer):
    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Answering)
        self.status, self.requests = status, 0


@pytest.mark.parametrize(
    ("status", "code", "requests"),
    [
        (503, grpc.StatusCode.UNAVAILABLE, 3),
        (500, grpc.StatusCode.UNAVAILABLE, 3),
        (400, grpc.StatusCode.INVALID_ARGUMENT, 1),
        (429, grpc.StatusCode.UNAVAILABLE, 1),
    ],
)
async def test_rest_retries_5xx_but_not_4xx(
    tmp_path: Path, status: int, code: grpc.StatusCode, requests: int
) -> None:
    server = _CountingServer(status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = make_settings(
            "qdrant",
            tmp_path,
            qdrant_path=None,
            qdrant_url=f"http://127.0.0.1:{server.server_address[1]}",
            qdrant_prefer_grpc=False,
            qdrant_retry_attempts=3,
        )
        async with running(settings) as served:
            await expect_error(
                served.stub.EnsureCollection(pb.EnsureCollectionRequest(collection="kb", dimension=4)), code
            )
    finally:
        server.shutdown()
        server.server_close()
    assert server.requests == requests


@pytest.mark.parametrize(
    ("answer", "code", "calls"),
    [
        (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, 3),
        (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, 3),
        (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT, 1),
        (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE, 1),
    ],
)
async def test_grpc_retries_transient_codes_only(
    tmp_path: Path, answer: grpc.StatusCode, code: grpc.StatusCode, calls: int
) -> None:
    """A real gRPC server standing in for Qdrant that fails every call with ``answer``."""
    received: list[str] = []

    async def fail(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(answer, "scripted")

    class Failing(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            received.append(details.method)
            return grpc.unary_unary_rpc_method_handler(fail)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([Failing()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        settings = make_settings(
            "qdrant",
            tmp_path,
            qdrant_path=None,
            qdrant_url=f"http://127.0.0.1:{closed_port()}",
            qdrant_grpc_port=port,
            qdrant_prefer_grpc=True,
            qdrant_retry_attempts=3,
        )
        async with running(settings) as served:
            await expect_error(
                served.stub.Search(pb.SearchRequest(collection="kb", vector=[1.0, 0, 0, 0])), code
            )
    finally:
        await server.stop(None)
    assert len(received) == calls, received
    assert set(received) == {"/qdrant.Collections/Get"}


class _OldCollections(http.server.BaseHTTPRequestHandler):
    """A Qdrant REST API holding collections made before access lists: ``file_name`` (and in a
    shared collection ``kb``) indexed, ``acl`` not. Records every index it is asked to create."""

    def _reply(self, result: object) -> None:
        body = json.dumps({"result": result, "status": "ok", "time": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _OldServer)
        path = self.path.split("?")[0]
        if path == "/collections":
            self._reply({"collections": [{"name": server.collection}]})
        else:
            assert path == f"/collections/{server.collection}", path
            self._reply(server.info)

    def do_POST(self) -> None:  # the shared layout looks its knowledge base's marker up
        server = self.server
        assert isinstance(server, _OldServer)
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply([{"id": marker_id("kb"), "payload": {}}])

    def do_PUT(self) -> None:
        server = self.server
        assert isinstance(server, _OldServer)
        assert self.path.split("?")[0] == f"/collections/{server.collection}/index", self.path
        server.indexed.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._reply({"operation_id": 1, "status": "completed"})

    def log_message(self, format: str, *args: object) -> None:
        return


class _OldServer(http.server.ThreadingHTTPServer):
    def __init__(self, collection: str, indexed_fields: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _OldCollections)
        self.collection = collection
        self.indexed: list[dict[str, str]] = []
        keyword = {"data_type": "keyword", "points": 0}
        self.info = {
            "status": "green",
            "optimizer_status": "ok",
            "segments_count": 1,
            "config": {
                "params": {
                    "vectors": {"dense": {"size": 4, "distance": "Cosine"}},
                    "sparse_vectors": {"sparse": {"modifier": "idf"}},
                },
                "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                "optimizer_config": {
                    "deleted_threshold": 0.2,
                    "vacuum_min_vector_number": 1000,
                    "default_segment_number": 0,
                    "flush_interval_sec": 5,
                },
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            },
            "payload_schema": {field: keyword for field in indexed_fields},
        }


@pytest.mark.parametrize(
    ("layout", "collection", "indexed_fields"),
    [("qdrant", "kb", ["file_name"]), ("qdrant-shared", "zhiku~shared_4", ["kb", "file_name"])],
)
async def test_a_collection_made_before_access_lists_gets_the_acl_index_when_opened(
    tmp_path: Path, layout: str, collection: str, indexed_fields: list[str]
) -> None:
    server = _OldServer(collection, indexed_fields)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = make_settings(
            layout,
            tmp_path,
            qdrant_path=None,
            qdrant_url=f"http://127.0.0.1:{server.server_address[1]}",
            qdrant_prefer_grpc=False,
        )
        async with running(settings) as served:
            for _ in range(2):
                reply = await served.stub.EnsureCollection(
                    pb.EnsureCollectionRequest(collection="kb", dimension=4)
                )
                assert not reply.created
    finally:
        server.shutdown()
        server.server_close()
    # Only the missing index, once per process.
    assert [(index["field_name"], index["field_schema"]) for index in server.indexed] == [("acl", "keyword")]
