"""Files in the catalog: one row per stored original, naming the job that owns its vectors.

Reads only: a file row changes with its jobs (an upload, a cancel, a deletion that cancels
the running job), so those writes belong to the job lifecycle, ``services.ingest.jobs``.
"""

from __future__ import annotations

from sqlalchemy import select

from services.common.errors import NotFound, file_not_found
from services.ingest.store.database import CatalogDatabase
from services.ingest.store.records import FileRecord
from services.ingest.store.tables import FileRow, file_record

__all__ = ["FileRepository", "file_not_found"]


class FileRepository:
    def __init__(self, database: CatalogDatabase) -> None:
        self.database = database

    def get(self, kb: str, file_name: str) -> FileRecord:
        with self.database.session(write=False) as session:
            kb_id = self.database.kb_row(session, kb).id
            row = session.scalar(select(FileRow).where(FileRow.kb_id == kb_id, FileRow.name == file_name))
            if row is None:
                raise file_not_found(kb, file_name)
            return file_record(kb, row)

    def find(self, kb: str, file_name: str) -> FileRecord | None:
        try:
            return self.get(kb, file_name)
        except NotFound:
            return None

    def find_many(self, kb: str, file_names: list[str]) -> dict[str, FileRecord]:
        """The named files that exist, by name, in one read (an upload of many files)."""
        with self.database.session(write=False) as session:
            kb_id = self.database.kb_row(session, kb).id
            rows = session.scalars(
                select(FileRow).where(FileRow.kb_id == kb_id, FileRow.name.in_(file_names))
            )
            return {row.name: file_record(kb, row) for row in rows}

    def list(self, kb: str) -> list[FileRecord]:
        with self.database.session(write=False) as session:
            kb_id = self.database.kb_row(session, kb).id
            rows = session.scalars(select(FileRow).where(FileRow.kb_id == kb_id).order_by(FileRow.name))
            return [file_record(kb, row) for row in rows]
