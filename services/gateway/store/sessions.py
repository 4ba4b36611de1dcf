"""Sign-in sessions: the browser holds a random token in a cookie, the store its SHA-256.

A session is found only together with its user, and only while it has not expired and the
user is not disabled, so signing out, expiry and disabling a user all take effect on the very
next request.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from services.common.database import rows_matched
from services.gateway.store.database import Database
from services.gateway.store.keys import hash_key
from services.gateway.store.tables import GroupMemberRow, SessionRow, UserRow
from services.gateway.store.users import UserRecord, user_record


@dataclass(frozen=True)
class SessionRecord:
    token_hash: str
    user_id: str
    csrf_token: str
    created_at: float
    expires_at: float


def _record(row: SessionRow) -> SessionRecord:
    return SessionRecord(row.token_hash, row.user_id, row.csrf_token, row.created_at, row.expires_at)


class SessionRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, user_id: str, ttl_s: float, ip: str = "", user_agent: str = ""
    ) -> tuple[SessionRecord, str]:
        """A new session and its token (for the cookie; only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        row = SessionRow(
            token_hash=hash_key(token),
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + ttl_s,
            created_ip=ip[:64],
            user_agent=user_agent[:300],
        )
        with self.db.session(write=True) as session:
            session.add(row)
        return _record(row), token

    def find(self, token: str) -> tuple[SessionRecord, UserRecord] | None:
        """The live session of ``token`` with its (enabled) user, or None."""
        with self.db.session() as session:
            found = session.execute(
                select(SessionRow, UserRow)
                .join(UserRow, UserRow.id == SessionRow.user_id)
                .where(
                    SessionRow.token_hash == hash_key(token),
                    SessionRow.expires_at > time.time(),
                    UserRow.disabled.is_(False),
                )
            ).first()
            if found is None:
                return None
            row, user = found
            groups = session.scalars(
                select(GroupMemberRow.group_name)
                .where(GroupMemberRow.user_id == user.id)
                .order_by(GroupMemberRow.group_name)
            ).all()
            return _record(row), user_record(user, groups)

    def delete(self, token: str) -> bool:
        with self.db.session(write=True) as session:
            result = session.execute(delete(SessionRow).where(SessionRow.token_hash == hash_key(token)))
            return bool(rows_matched(result))

    def delete_of_user(self, user_id: str) -> int:
        with self.db.session(write=True) as session:
            return rows_matched(session.execute(delete(SessionRow).where(SessionRow.user_id == user_id)))

    def purge_expired(self) -> int:
        with self.db.session(write=True) as session:
            return rows_matched(
                session.execute(delete(SessionRow).where(SessionRow.expires_at <= time.time()))
            )
