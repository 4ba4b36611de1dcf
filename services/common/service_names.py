"""The fully qualified gRPC names of Zhiku's services, read once from the generated descriptors.

Servers register health and reflection under these names, clients check readiness and the
gateway guards methods by them; deriving them here (instead of spelling
``"zhiku.v1.EmbedService"`` in each place) keeps every side in step with ``protos/``.
"""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from zhiku.v1 import embed_pb2, generate_pb2, ingest_pb2, retrieve_pb2

EMBED_SERVICE = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
RETRIEVE_SERVICE = retrieve_pb2.DESCRIPTOR.services_by_name["RetrieveService"].full_name
GENERATE_SERVICE = generate_pb2.DESCRIPTOR.services_by_name["GenerateService"].full_name
INGEST_SERVICE = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Short name (as in settings, the launcher and metrics) -> fully qualified gRPC service name.
SERVICE_FULL_NAMES = {
    "embed": EMBED_SERVICE,
    "retrieve": RETRIEVE_SERVICE,
    "generate": GENERATE_SERVICE,
    "ingest": INGEST_SERVICE,
}
