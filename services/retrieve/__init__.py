"""The retrieve service: one vector collection per knowledge base, behind gRPC RetrieveService."""
