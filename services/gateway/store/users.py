"""Users, groups and group memberships.

Emails are stored lower-cased and compared so: ``Ana@Example.com`` and ``ana@example.com``
are one person. Password hashes are made and checked by :mod:`services.gateway.passwords`;
this repository only stores them.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.database import rows_matched
from services.common.errors import AlreadyExists
from services.gateway.store.database import Database
from services.gateway.store.tables import GroupMemberRow, GroupRow, RoleGrantRow, SessionRow, UserRow

USER_ID_PREFIX = "u_"


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class UserRecord:
    id: str
    email: str
    display_name: str
    admin: bool
    disabled: bool
    created_at: float
    groups: tuple[str, ...] = ()
    has_password: bool = False
    sso_subject: str | None = None

    @property
    def sso(self) -> bool:
        """Made or linked by single sign-on."""
        return self.sso_subject is not None


@dataclass(frozen=True)
class GroupRecord:
    name: str
    display_name: str
    created_at: float
    members: tuple[str, ...] = ()  # user ids


def _groups_of(session: Session, user_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {user_id: [] for user_id in user_ids}
    rows = session.execute(
        select(GroupMemberRow.user_id, GroupMemberRow.group_name)
        .where(GroupMemberRow.user_id.in_(list(user_ids)))
        .order_by(GroupMemberRow.group_name)
    ).all()
    for user_id, group in rows:
        found[user_id].append(group)
    return found


def user_record(row: UserRow, groups: Sequence[str] = ()) -> UserRecord:
    return UserRecord(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        admin=row.admin,
        disabled=row.disabled,
        created_at=row.created_at,
        groups=tuple(groups),
        has_password=row.password_hash is not None,
        sso_subject=row.sso_subject,
    )


class UserRepo:
    """Users and their groups; every answer carries the user's group names."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        email: str,
        display_name: str = "",
        password_hash: str | None = None,
        admin: bool = False,
        sso_subject: str | None = None,
    ) -> UserRecord:
        """A new user; :class:`AlreadyExists` when the email (or SSO subject) is taken."""
        row = UserRow(
            id=USER_ID_PREFIX + uuid.uuid4().hex,
            email=normalize_email(email),
            display_name=display_name,
            password_hash=password_hash,
            sso_subject=sso_subject,
            admin=admin,
            disabled=False,
            created_at=time.time(),
        )
        try:
            with self.db.session(write=True) as session:
                session.add(row)
        except IntegrityError as error:
            raise AlreadyExists(f"a user with email {row.email!r} already exists") from error
        return user_record(row)

    def get(self, user_id: str) -> UserRecord | None:
        with self.db.session() as session:
            row = session.get(UserRow, user_id)
            return None if row is None else user_record(row, _groups_of(session, [user_id])[user_id])

    def find_by_email(self, email: str) -> UserRecord | None:
        with self.db.session() as session:
            row = session.scalar(select(UserRow).where(UserRow.email == normalize_email(email)))
            return None if row is None else user_record(row, _groups_of(session, [row.id])[row.id])

    def find_by_sso_subject(self, subject: str) -> UserRecord | None:
        with self.db.session() as session:
            row = session.scalar(select(UserRow).where(UserRow.sso_subject == subject))
            return None if row is None else user_record(row, _groups_of(session, [row.id])[row.id])

    def password_hash(self, user_id: str) -> str | None:
        with self.db.session() as session:
            return session.scalar(select(UserRow.password_hash).where(UserRow.id == user_id))

    def list(self) -> builtins.list[UserRecord]:
        """Every user, by email."""
        with self.db.session() as session:
            rows = session.scalars(select(UserRow).order_by(UserRow.email)).all()
            groups = _groups_of(session, [row.id for row in rows])
            return [user_record(row, groups[row.id]) for row in rows]

    def count(self) -> int:
        with self.db.session() as session:
            return int(session.scalar(select(func.count()).select_from(UserRow)) or 0)

    def count_active_admins(self) -> int:
        with self.db.session() as session:
            query = select(func.count()).where(UserRow.admin.is_(True), UserRow.disabled.is_(False))
            return int(session.scalar(query) or 0)

    def update(
        self,
        user_id: str,
        *,
        display_name: str | None = None,
        admin: bool | None = None,
        disabled: bool | None = None,
        password_hash: str | None = None,
        sso_subject: str | None = None,
    ) -> UserRecord | None:
        """Change the given fields (None: unchanged); None when the user is unknown. Disabling a
        user ends their sessions in the same transaction."""
        try:
            with self.db.session(write=True) as session:
                row = session.get(UserRow, user_id)
                if row is None:
                    return None
                if display_name is not None:
                    row.display_name = display_name
                if admin is not None:
                    row.admin = admin
                if disabled is not None:
                    row.disabled = disabled
                    if disabled:
                        session.execute(delete(SessionRow).where(SessionRow.user_id == user_id))
                if password_hash is not None:
                    row.password_hash = password_hash
                if sso_subject is not None:
                    row.sso_subject = sso_subject
                session.flush()
                return user_record(row, _groups_of(session, [user_id])[user_id])
        except IntegrityError as error:
            raise AlreadyExists("that SSO subject belongs to another user") from error

    def delete(self, user_id: str) -> bool:
        """Delete the user with their memberships, role grants and sessions (their API keys are
        revoked by the caller, through the key repository)."""
        with self.db.session(write=True) as session:
            if session.get(UserRow, user_id) is None:
                return False
            session.execute(delete(SessionRow).where(SessionRow.user_id == user_id))
            session.execute(delete(GroupMemberRow).where(GroupMemberRow.user_id == user_id))
            session.execute(
                delete(RoleGrantRow).where(RoleGrantRow.holder_kind == "user", RoleGrantRow.holder == user_id)
            )
            session.execute(delete(UserRow).where(UserRow.id == user_id))
            return True


class GroupRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, display_name: str = "") -> GroupRecord:
        row = GroupRow(name=name, display_name=display_name or name, created_at=time.time())
        try:
            with self.db.session(write=True) as session:
                session.add(row)
        except IntegrityError as error:
            raise AlreadyExists(f"group {name!r} already exists") from error
        return GroupRecord(row.name, row.display_name, row.created_at)

    def _members(self, session: Session, names: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {name: [] for name in names}
        rows = session.execute(
            select(GroupMemberRow.group_name, GroupMemberRow.user_id)
            .where(GroupMemberRow.group_name.in_(list(names)))
            .order_by(GroupMemberRow.user_id)
        ).all()
        for group, user_id in rows:
            found[group].append(user_id)
        return found

    def get(self, name: str) -> GroupRecord | None:
        with self.db.session() as session:
            row = session.get(GroupRow, name)
            if row is None:
                return None
            return GroupRecord(
                row.name, row.display_name, row.created_at, tuple(self._members(session, [name])[name])
            )

    def list(self) -> builtins.list[GroupRecord]:
        with self.db.session() as session:
            rows = session.scalars(select(GroupRow).order_by(GroupRow.name)).all()
            members = self._members(session, [row.name for row in rows])
            return [
                GroupRecord(row.name, row.display_name, row.created_at, tuple(members[row.name]))
                for row in rows
            ]

    def delete(self, name: str) -> bool:
        """Delete the group with its memberships and role grants."""
        with self.db.session(write=True) as session:
            if session.get(GroupRow, name) is None:
                return False
            session.execute(delete(GroupMemberRow).where(GroupMemberRow.group_name == name))
            session.execute(
                delete(RoleGrantRow).where(RoleGrantRow.holder_kind == "group", RoleGrantRow.holder == name)
            )
            session.execute(delete(GroupRow).where(GroupRow.name == name))
            return True

    def add_member(self, name: str, user_id: str) -> bool | None:
        """Put the user in the group: True when added, False when already there, None when the
        group or the user does not exist."""
        with self.db.session(write=True) as session:
            if session.get(GroupRow, name) is None or session.get(UserRow, user_id) is None:
                return None
            if session.get(GroupMemberRow, (name, user_id)) is not None:
                return False
            session.add(GroupMemberRow(group_name=name, user_id=user_id))
            return True

    def remove_member(self, name: str, user_id: str) -> bool:
        with self.db.session(write=True) as session:
            result = session.execute(
                delete(GroupMemberRow).where(
                    GroupMemberRow.group_name == name, GroupMemberRow.user_id == user_id
                )
            )
            return bool(rows_matched(result))

    def set_memberships(self, user_id: str, names: Sequence[str]) -> None:
        """Make ``names`` (those that exist) exactly the user's groups: SSO group claims are
        authoritative at each sign-in."""
        with self.db.session(write=True) as session:
            existing = set(session.scalars(select(GroupRow.name).where(GroupRow.name.in_(list(names)))).all())
            session.execute(delete(GroupMemberRow).where(GroupMemberRow.user_id == user_id))
            for name in sorted(existing):
                session.add(GroupMemberRow(group_name=name, user_id=user_id))
