"""Knowledge bases in the catalog: create, read with their file and chunk counts, delete."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from services.common.errors import AlreadyExists, kb_not_found
from services.ingest.store.database import CatalogDatabase
from services.ingest.store.records import KnowledgeBaseRecord
from services.ingest.store.sources import delete_sources_of
from services.ingest.store.tables import FileRow, JobRow, KnowledgeBaseRow, kb_record


class KnowledgeBaseRepository:
    def __init__(self, database: CatalogDatabase) -> None:
        self.database = database

    def create(
        self, name: str, description: str = "", embed_model: str = "", parent_chunk_size: int = 0
    ) -> KnowledgeBaseRecord:
        row = KnowledgeBaseRow(
            name=name,
            description=description,
            embed_model=embed_model,
            created_at=time.time(),
            parent_chunk_size=parent_chunk_size,
        )
        try:
            with self.database.session(write=True) as session:
                if session.scalar(select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.name == name)):
                    raise AlreadyExists(f"knowledge base {name!r} already exists")
                # A migrated knowledge base's collection has a name of its own (see migration.py).
                if session.scalar(
                    select(KnowledgeBaseRow.id).where(
                        or_(KnowledgeBaseRow.collection == name, KnowledgeBaseRow.shadow_collection == name)
                    )
                ):
                    raise AlreadyExists(f"{name!r} is the vector collection of another knowledge base")
                session.add(row)
        except IntegrityError:
            raise AlreadyExists(f"knowledge base {name!r} already exists") from None
        return kb_record(row)

    @staticmethod
    def _with_counts() -> Any:
        return (
            select(
                KnowledgeBaseRow,
                func.count(FileRow.id),
                func.coalesce(func.sum(FileRow.chunks), 0),
            )
            .outerjoin(FileRow, FileRow.kb_id == KnowledgeBaseRow.id)
            .group_by(KnowledgeBaseRow.id)
        )

    def get(self, name: str) -> KnowledgeBaseRecord:
        with self.database.session(write=False) as session:
            found = session.execute(self._with_counts().where(KnowledgeBaseRow.name == name)).first()
            if found is None:
                raise kb_not_found(name)
            return kb_record(*found)

    def list(self) -> list[KnowledgeBaseRecord]:
        with self.database.session(write=False) as session:
            rows = session.execute(self._with_counts().order_by(KnowledgeBaseRow.name)).all()
            return [kb_record(*row) for row in rows]

    def delete(self, name: str) -> None:
        """Delete the knowledge base with its files and jobs (their history goes with it)."""
        with self.database.session(write=True) as session:
            kb_id = self.database.kb_row(session, name).id
            # Explicit deletes: SQLite only cascades with foreign_keys=ON, PostgreSQL always does.
            session.execute(delete(FileRow).where(FileRow.kb_id == kb_id))
            session.execute(delete(JobRow).where(JobRow.kb_id == kb_id))
            delete_sources_of(session, kb_id)
            session.execute(delete(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb_id))

    def parent_chunk_size(self, name: str) -> int | None:
        """The knowledge base's default parent-child setting (0: plain); None when it does not exist."""
        with self.database.session(write=False) as session:
            found = session.scalar(
                select(KnowledgeBaseRow.parent_chunk_size).where(KnowledgeBaseRow.name == name)
            )
            return None if found is None else int(found)

    def exists(self, name: str) -> bool:
        with self.database.session(write=False) as session:
            return (
                session.scalar(select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.name == name)) is not None
            )
