"""Ingest jobs in the catalog, read side: one job, a knowledge base's jobs, counts per state.

Every change of a job's state goes through ``services.ingest.jobs`` instead.
"""

from __future__ import annotations

from sqlalchemy import func, select

from services.common.errors import NotFound, job_not_found
from services.ingest.store.database import CatalogDatabase
from services.ingest.store.records import JobRecord, JobState
from services.ingest.store.tables import JobRow, KnowledgeBaseRow, job_record


class JobRepository:
    def __init__(self, database: CatalogDatabase) -> None:
        self.database = database

    def get(self, job_id: str) -> JobRecord:
        with self.database.session(write=False) as session:
            found = session.execute(
                select(JobRow, KnowledgeBaseRow.name)
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == JobRow.kb_id)
                .where(JobRow.id == job_id)
            ).first()
            if found is None:
                raise job_not_found(job_id)
            row, kb = found
            return job_record(kb, row)

    def find(self, job_id: str) -> JobRecord | None:
        try:
            return self.get(job_id)
        except NotFound:
            return None

    def list(self, kb: str, limit: int = 100) -> list[JobRecord]:
        """The knowledge base's jobs, newest first."""
        with self.database.session(write=False) as session:
            kb_id = self.database.kb_row(session, kb).id
            # Plain rows, not ORM objects: clients poll this listing, hundreds of jobs a time.
            rows = session.execute(
                select(*JobRow.__table__.columns)
                .where(JobRow.kb_id == kb_id)
                .order_by(JobRow.created_at.desc(), JobRow.id)
                .limit(limit)
            )
            return [job_record(kb, row) for row in rows]

    def counts(self) -> dict[JobState, int]:
        """Jobs per state, for the queue-depth and jobs-by-state gauges."""
        with self.database.session(write=False) as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        counts = dict.fromkeys(JobState, 0)
        for state, count in rows:
            counts[JobState(state)] = int(count)
        return counts
