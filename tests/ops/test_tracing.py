"""OpenTelemetry tracing through the real stack, exported to a real OTLP/HTTP receiver.

The receiver is a plain HTTP server on loopback that accepts ``POST /v1/traces`` and decodes
the protobuf body with ``opentelemetry-proto``: what a collector would see. The stack is the
same multi-process launcher as ``make run`` (each service its own process, own provider).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from launcher.stack import launch_in_background
from services.common import tracing
from services.common.config import CommonSettings
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from tests.ops.conftest import OUTPUT, _wait, _wait_jobs


class Receiver(ThreadingHTTPServer):
    """Collects every span posted to /v1/traces as (service.name, span) pairs."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[str, object]] = []
        self.posts = 0
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            self.server.posts += 1
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.server.spans.append((attrs.get("service.name", ""), span))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_trace_spans_gateway_embed_and_retrieve(receiver: Receiver, tmp_path: Path) -> None:
    env = {
        "ZHIKU_OTEL_ENDPOINT": receiver.endpoint,
        "ZHIKU_GENERATE_BACKEND": "extractive",
        "ZHIKU_EMBED_LOCAL_MODEL": "use",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export batches every 0.2 s, not 5 s
    }
    stack = launch_in_background(tmp_path / "data", OUTPUT / "tracing-stack.log", env)
    try:
        with httpx.Client(base_url=stack.url, timeout=60) as client:
            client.post("/v1/knowledge_bases", json={"name": "traced"}).raise_for_status()
            # Searching an empty knowledge base answers without embed or retrieve: fill it.
            upload = [("files", ("leave.txt", b"Annual leave needs three days notice."))]
            accepted = client.post("/v1/knowledge_bases/traced/files", files=upload)
            assert accepted.status_code in (200, 201, 202), accepted.text
            _wait_jobs(client, [job["id"] for job in accepted.json()["jobs"]], timeout_s=120)
            reply = client.post(
                "/v1/knowledge_bases/traced/search",
                json={"query": "annual leave"},
                headers={"X-Request-ID": "trace-me"},
            )
            assert reply.status_code == 200, reply.text

        def search_trace() -> list[tuple[str, object]]:
            """The spans of the trace rooted at the gateway's search span that reached embed."""
            with receiver.lock:
                spans = list(receiver.spans)
            roots = [s for svc, s in spans if svc == "zhiku-gateway" and s.name.endswith("/search")]
            for root in roots:
                joined = [(svc, s) for svc, s in spans if s.trace_id == root.trace_id]
                if any(svc == "zhiku-embed" for svc, _ in joined):
                    return joined
            return []

        def complete() -> bool:
            services = {svc for svc, _ in search_trace()}
            return {"zhiku-gateway", "zhiku-embed", "zhiku-retrieve"} <= services

        try:
            _wait(complete, 30, "the search's spans did not all arrive")
        except BaseException:
            seen = [(svc, s.name, s.trace_id.hex()[:8]) for svc, s in receiver.spans]
            raise AssertionError(f"spans received: {seen}") from None
    finally:
        stack.stop()

    spans = search_trace()
    # FastAPI adds its own fastapi.* child spans when OpenTelemetry is importable; ours is the root.
    (root,) = [s for svc, s in spans if svc == "zhiku-gateway" and not s.parent_span_id]
    assert root.name == "POST /v1/knowledge_bases/{kb}/search"
    assert root.kind == root.SPAN_KIND_SERVER
    assert root.parent_span_id == b""
    by_service = {svc: [s for name, s in spans if name == svc] for svc, _ in spans}
    embed = [s for s in by_service["zhiku-embed"] if s.name == "zhiku.v1.EmbedService/Embed"]
    search = [s for s in by_service["zhiku-retrieve"] if s.name == "zhiku.v1.RetrieveService/Search"]
    assert embed and search, sorted(s.name for _, s in spans)
    gateway_ids = {s.span_id: s.parent_span_id for svc, s in spans if svc == "zhiku-gateway"}

    def ancestry(span_id: bytes) -> list[bytes]:
        chain = [span_id]
        while gateway_ids.get(chain[-1]):
            chain.append(gateway_ids[chain[-1]])
        return chain

    for span in (*embed, *search):
        assert span.kind == span.SPAN_KIND_SERVER
        # The parent is a gateway span (ours, or FastAPI's endpoint span under it).
        assert ancestry(span.parent_span_id)[-1] == root.span_id
        assert span.parent_span_id in gateway_ids
        assert span.trace_id == root.trace_id
        assert span.start_time_unix_nano >= root.start_time_unix_nano
        assert span.end_time_unix_nano <= root.end_time_unix_nano
    attrs = {a.key: a.value for a in search[0].attributes}
    assert attrs["rpc.system"].string_value == "grpc"
    assert attrs["rpc.grpc.status_code"].int_value == 0


def test_no_endpoint_means_no_exporter_and_nothing_exported(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own variable points at the receiver: only ZHIKU_OTEL_ENDPOINT may turn it on.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.delenv("ZHIKU_OTEL_ENDPOINT", raising=False)
    common = CommonSettings()
    assert common.otel_endpoint == ""
    assert tracing.setup_tracing("gateway", common) is None

    with TestClient(create_app(GatewaySettings(common=common))) as client:
        assert client.get("/healthz").status_code == 200
        assert (
            client.get(
                "/healthz", headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
            ).status_code
            == 200
        )

    provider = trace.get_tracer_provider()
    assert type(provider).__module__.startswith("opentelemetry.trace"), provider  # the API's proxy
    assert not tracing.tracer().start_span("probe").is_recording()
    assert receiver.posts == 0 and receiver.spans == []
