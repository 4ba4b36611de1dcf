"""The ingest worker process: the Celery app and task, and the pipeline they run."""
