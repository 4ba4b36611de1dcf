"""Prometheus metrics every process exposes, named ``zhiku_*`` as the dashboards expect."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

GRPC_REQUESTS = Counter("zhiku_grpc_requests_total", "gRPC calls served", ["service", "method", "code"])
GRPC_LATENCY = Histogram(
    "zhiku_grpc_request_seconds", "gRPC call latency", ["service", "method"], buckets=LATENCY_BUCKETS
)
HTTP_REQUESTS = Counter(
    "zhiku_http_requests_total", "HTTP requests served by the gateway", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "zhiku_http_request_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS
)


def serve_metrics(port: int) -> None:
    """Expose /metrics on its own port (0 disables), as Prometheus scrapes sidecar-free pods."""
    if port:
        start_http_server(port)
        log.info("metrics on :%d/metrics", port)
