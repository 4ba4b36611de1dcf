"""OpenTelemetry tracing, off unless ``ZHIKU_OTEL_ENDPOINT`` names an OTLP/HTTP traces endpoint.

One process, one tracer provider: :func:`setup_tracing` installs it (with the process's
``service.name``) and a batching OTLP/HTTP exporter. With no endpoint nothing is installed, so
the OpenTelemetry API stays its no-op self: spans cost next to nothing and nothing is exported.
Context crosses process boundaries as W3C ``traceparent`` (gRPC metadata, HTTP headers) in
both cases, so a traced gateway in front of untraced services still links what is traced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.config import CommonSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("zhiku.tracing")

TRACER_NAME = "zhiku"
_PROPAGATOR = TraceContextTextMapPropagator()
_GETTER = DefaultGetter()
# The provider this process installed (a second setup in one process keeps the first).
_installed: TracerProvider | None = None


def setup_tracing(service: str, common: CommonSettings) -> TracerProvider | None:
    """Install a tracer provider exporting to ``common.otel_endpoint``; None when it is empty.

    The SDK is imported only when tracing is on, so a process without an endpoint never
    creates an exporter (or its HTTP session). The provider flushes at interpreter exit.
    """
    global _installed
    endpoint = common.otel_endpoint.strip()
    if not endpoint:
        return None
    if _installed is not None:
        return _installed
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": f"zhiku-{service}", "service.namespace": common.otel_service_namespace}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _installed = provider
    log.info("tracing to %s as zhiku-%s", endpoint, service)
    return provider


def tracer() -> trace.Tracer:
    """The stack's tracer (a no-op one until :func:`setup_tracing` installed a provider)."""
    return trace.get_tracer(TRACER_NAME)


def extract(carrier: Iterable[tuple[str | bytes, str | bytes]] | None) -> Context:
    """The remote parent carried by gRPC metadata or ASGI headers (pairs), if any."""
    headers: dict[str, str] = {}
    for key, value in carrier or ():
        key = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        headers[key.lower()] = value
    return _PROPAGATOR.extract(headers, getter=_GETTER)


def inject() -> Mapping[str, str]:
    """``traceparent`` (and ``tracestate``) for the current span; empty outside any span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier
