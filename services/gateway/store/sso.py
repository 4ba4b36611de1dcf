"""A single sign-on sign-in, written in one transaction: the user, their groups and roles.

Everything a sign-in changes (creating or linking the user, their name and email, admin when
the group map decides it, membership of the groups the map manages, the roles those groups
hold) happens in one transaction, and every refusal (disabled user, sign-up closed, an email
owned by another SSO account) is raised inside it, so a refused or failed sign-in leaves
nothing behind: no half-created user, no changed membership.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.gateway.store.database import Database
from services.gateway.store.tables import GroupMemberRow, GroupRow, RoleGrantRow, UserRow
from services.gateway.store.users import USER_ID_PREFIX, UserRecord, user_record


class SsoRefused(Exception):
    """The sign-in may not go through; ``code`` is a key of ``errors.SSO_FAILURE_STATUS``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SsoSignIn:
    """What the provider said about one person, already mapped to Zhiku's terms."""

    subject: str  # issuer + " " + sub: unique across providers
    email: str
    display_name: str
    groups: frozenset[str]  # the managed groups they belong to now
    managed_groups: frozenset[str]  # every group the map names (membership follows the claim)
    admin: bool | None  # None: the map does not decide who is admin
    group_roles: Mapping[str, Mapping[str, str]]  # group -> knowledge base -> role
    auto_create: bool
    keep_admin_email: str = ""  # the configured first admin stays admin whatever the claims say


class SsoRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def sign_in(self, request: SsoSignIn) -> tuple[UserRecord, bool]:
        """The signed-in user and whether this sign-in created them; SsoRefused otherwise.

        Two first sign-ins at once (two tabs, two replicas) race to insert the same user or
        group: the loser's transaction fails on the unique key and is run once more, when it
        finds what the winner wrote."""
        try:
            return self._sign_in(request)
        except IntegrityError:
            return self._sign_in(request)

    def _sign_in(self, request: SsoSignIn) -> tuple[UserRecord, bool]:
        with self.db.session(write=True) as session:
            row, created = self._user(session, request)
            if row.disabled:
                raise SsoRefused("user_disabled", f"the account {row.email} is disabled in Zhiku")
            row.display_name = request.display_name
            if request.admin is not None and row.email != request.keep_admin_email:
                row.admin = request.admin
            groups = self._sync_groups(session, row.id, request)
            session.flush()
            return user_record(row, groups), created

    def _user(self, session: Session, request: SsoSignIn) -> tuple[UserRow, bool]:
        """The user of this subject, else of this email (linked now), else a new one."""
        by_email = session.scalar(select(UserRow).where(UserRow.email == request.email))
        row = session.scalar(select(UserRow).where(UserRow.sso_subject == request.subject))
        if row is not None:
            if row.email != request.email:  # the address changed at the provider
                if by_email is not None:
                    raise SsoRefused(
                        "account_conflict",
                        f"the provider's new email {request.email} belongs to another Zhiku user",
                    )
                row.email = request.email
            return row, False
        if by_email is not None:
            if by_email.sso_subject is not None:
                raise SsoRefused(
                    "account_conflict",
                    f"{request.email} is already linked to another account at the identity provider",
                )
            by_email.sso_subject = request.subject  # an admin-made or password user, linked
            return by_email, False
        if not request.auto_create:
            raise SsoRefused(
                "sign_up_closed",
                f"no Zhiku user has the email {request.email}: ask an admin to add you "
                "(ZHIKU_GATEWAY_OIDC_AUTO_CREATE_USERS is off)",
            )
        row = UserRow(
            id=USER_ID_PREFIX + uuid.uuid4().hex,
            email=request.email,
            display_name=request.display_name,
            password_hash=None,
            sso_subject=request.subject,
            admin=False,
            disabled=False,
            created_at=time.time(),
        )
        session.add(row)
        session.flush()
        return row, True

    def _sync_groups(self, session: Session, user_id: str, request: SsoSignIn) -> list[str]:
        """Membership of managed groups follows the claim; other groups are left as they are.
        Groups the map names are created when missing, with the roles the map gives them."""
        now = time.time()
        existing = set(session.scalars(select(GroupRow.name).where(GroupRow.name.in_(request.groups))))
        for name in sorted(request.groups - existing):
            session.add(GroupRow(name=name, display_name=name, created_at=now))
        session.flush()
        current = set(
            session.scalars(select(GroupMemberRow.group_name).where(GroupMemberRow.user_id == user_id))
        )
        leaving = (current & request.managed_groups) - request.groups
        if leaving:
            session.execute(
                delete(GroupMemberRow).where(
                    GroupMemberRow.user_id == user_id, GroupMemberRow.group_name.in_(leaving)
                )
            )
        for name in sorted(request.groups - current):
            session.add(GroupMemberRow(group_name=name, user_id=user_id))
        for group, roles in request.group_roles.items():
            for knowledge_base, role in roles.items():
                self._grant(session, knowledge_base, group, role, now)
        return sorted((current - leaving) | request.groups)

    @staticmethod
    def _grant(session: Session, knowledge_base: str, group: str, role: str, now: float) -> None:
        """The configured role of a group on a knowledge base (replacing the one it had)."""
        row = session.scalar(
            select(RoleGrantRow).where(
                RoleGrantRow.knowledge_base == knowledge_base,
                RoleGrantRow.holder_kind == "group",
                RoleGrantRow.holder == group,
            )
        )
        if row is None:
            session.add(
                RoleGrantRow(
                    knowledge_base=knowledge_base,
                    holder_kind="group",
                    holder=group,
                    role=role,
                    created_at=now,
                )
            )
        elif row.role != role:
            row.role = role
