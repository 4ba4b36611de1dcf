"""The catalog: knowledge bases, files and ingest jobs in SQL (SQLite embedded, PostgreSQL deployed).

One object per process bundles the database and a repository per kind of record, so the API
and the worker open it once and hand it around. The repositories read and write what only they
own; every change of a job's state (and of the file row that follows it) goes through
``services.ingest.jobs.JobLifecycle``, which uses this catalog's database.
"""

from __future__ import annotations

from sqlalchemy import Engine

from services.ingest.store.database import CatalogDatabase
from services.ingest.store.files import FileRepository
from services.ingest.store.job_history import JobRepository
from services.ingest.store.knowledge_bases import KnowledgeBaseRepository
from services.ingest.store.sources import SourceRepository


class Catalog:
    def __init__(self, url: str, sqlite_busy_timeout_s: float = 30.0) -> None:
        self.database = CatalogDatabase(url, sqlite_busy_timeout_s)
        self.knowledge_bases = KnowledgeBaseRepository(self.database)
        self.files = FileRepository(self.database)
        self.jobs = JobRepository(self.database)
        self.sources = SourceRepository(self.database)

    @property
    def engine(self) -> Engine:
        return self.database.engine

    def create_schema(self) -> None:
        self.database.create_schema()

    def dispose(self) -> None:
        self.database.dispose()
