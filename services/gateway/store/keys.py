"""API keys: generated here, shown once, stored as SHA-256 hashes with their permissions."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update

from services.common.database import rows_matched
from services.gateway.store.database import Database
from services.gateway.store.tables import ApiKeyRow

KEY_PREFIX = "zk-"
# Characters of the key shown in listings so an operator can tell keys apart.
SHOWN_CHARS = 10


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    name: str
    prefix: str
    knowledge_bases: list[str] | None
    rate_limit_per_minute: int | None
    admin: bool
    created_at: float
    owner: str | None = None  # the user it belongs to; None for keys older than users


def _record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        knowledge_bases=None if row.knowledge_bases is None else json.loads(row.knowledge_bases),
        rate_limit_per_minute=row.rate_limit_per_minute,
        admin=row.admin,
        created_at=row.created_at,
        owner=row.owner,
    )


class KeyRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        knowledge_bases: list[str] | None = None,
        rate_limit_per_minute: int | None = None,
        admin: bool = False,
        owner: str | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """The stored key and its plaintext (returned once, never stored)."""
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=uuid.uuid4().hex,
            name=name,
            prefix=plaintext[:SHOWN_CHARS],
            key_hash=hash_key(plaintext),
            knowledge_bases=None
            if knowledge_bases is None
            else json.dumps(knowledge_bases, ensure_ascii=False),
            rate_limit_per_minute=rate_limit_per_minute,
            admin=admin,
            created_at=time.time(),
            owner=owner,
        )
        with self.db.session(write=True) as session:
            session.add(row)
        return _record(row), plaintext

    def list(self, owner: str | None = None) -> list[ApiKeyRecord]:
        """Active keys, newest first: ``owner``'s only, or every key when ``owner`` is None."""
        query = select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
        if owner is not None:
            query = query.where(ApiKeyRow.owner == owner)
        with self.db.session() as session:
            rows = session.scalars(query.order_by(ApiKeyRow.created_at.desc())).all()
            return [_record(row) for row in rows]

    def find(self, plaintext: str) -> ApiKeyRecord | None:
        """The active key whose hash matches, or None."""
        with self.db.session() as session:
            row = session.scalar(
                select(ApiKeyRow).where(
                    ApiKeyRow.key_hash == hash_key(plaintext), ApiKeyRow.revoked_at.is_(None)
                )
            )
            return None if row is None else _record(row)

    def count_active(self) -> int:
        with self.db.session() as session:
            return int(session.scalar(select(func.count()).where(ApiKeyRow.revoked_at.is_(None))) or 0)

    def revoke(self, key_id: str, owner: str | None = None) -> bool:
        """Revoke an active key (only ``owner``'s when given); False when there is none."""
        query = update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
        if owner is not None:
            query = query.where(ApiKeyRow.owner == owner)
        with self.db.session(write=True) as session:
            return bool(rows_matched(session.execute(query.values(revoked_at=time.time()))))

    def revoke_owned_by(self, owner: str) -> int:
        """Revoke every key of a user (deleted): how many were active."""
        with self.db.session(write=True) as session:
            result = session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.owner == owner, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            return rows_matched(result)
