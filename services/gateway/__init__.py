"""The public HTTP API: FastAPI over long-lived gRPC channels to the four services."""
