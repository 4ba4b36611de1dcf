"""The ingest API process: the IngestService gRPC servicer and its server entry point."""
