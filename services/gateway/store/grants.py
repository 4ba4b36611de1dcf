"""Knowledge-base roles held by users and groups: ``owner`` > ``editor`` > ``viewer``.

One row per (knowledge base, holder); granting again replaces the role. Grants are dropped
with their knowledge base, their user or their group.
"""

from __future__ import annotations

import builtins
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, or_, select

from services.common.database import rows_matched
from services.gateway.store.database import Database
from services.gateway.store.tables import RoleGrantRow


class Role(enum.IntEnum):
    """Ordered: a higher role includes everything a lower one may do."""

    VIEWER = 1  # search, chat, list, download
    EDITOR = 2  # upload, delete, reindex, sources
    OWNER = 3  # delete the knowledge base, share it

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, label: str) -> Role:
        return cls[label.upper()]


class HolderKind(enum.StrEnum):
    USER = "user"
    GROUP = "group"


@dataclass(frozen=True)
class Grant:
    knowledge_base: str
    kind: HolderKind
    holder: str  # a user id or a group name
    role: Role


def _grant(row: RoleGrantRow) -> Grant:
    return Grant(row.knowledge_base, HolderKind(row.holder_kind), row.holder, Role.of(row.role))


class GrantRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set(self, knowledge_base: str, kind: HolderKind, holder: str, role: Role) -> Grant:
        """Give ``holder`` the role (replacing the one it had on that knowledge base)."""
        with self.db.session(write=True) as session:
            row = session.scalar(
                select(RoleGrantRow).where(
                    RoleGrantRow.knowledge_base == knowledge_base,
                    RoleGrantRow.holder_kind == kind.value,
                    RoleGrantRow.holder == holder,
                )
            )
            if row is None:
                row = RoleGrantRow(
                    knowledge_base=knowledge_base,
                    holder_kind=kind.value,
                    holder=holder,
                    role=role.label,
                    created_at=time.time(),
                )
                session.add(row)
            else:
                row.role = role.label
            return Grant(knowledge_base, kind, holder, role)

    def remove(self, knowledge_base: str, kind: HolderKind, holder: str) -> bool:
        with self.db.session(write=True) as session:
            result = session.execute(
                delete(RoleGrantRow).where(
                    RoleGrantRow.knowledge_base == knowledge_base,
                    RoleGrantRow.holder_kind == kind.value,
                    RoleGrantRow.holder == holder,
                )
            )
            return bool(rows_matched(result))

    def of_knowledge_base(self, knowledge_base: str) -> builtins.list[Grant]:
        with self.db.session() as session:
            rows = session.scalars(
                select(RoleGrantRow)
                .where(RoleGrantRow.knowledge_base == knowledge_base)
                .order_by(RoleGrantRow.holder_kind.desc(), RoleGrantRow.holder)
            ).all()
            return [_grant(row) for row in rows]

    def roles_of(self, user_id: str, groups: Sequence[str]) -> dict[str, Role]:
        """The best role the user holds on each knowledge base, themselves or through a group."""
        holders = [(RoleGrantRow.holder_kind == "user") & (RoleGrantRow.holder == user_id)]
        if groups:
            holders.append((RoleGrantRow.holder_kind == "group") & RoleGrantRow.holder.in_(list(groups)))
        with self.db.session() as session:
            rows = session.execute(
                select(RoleGrantRow.knowledge_base, RoleGrantRow.role).where(or_(*holders))
            ).all()
        best: dict[str, Role] = {}
        for knowledge_base, label in rows:
            role = Role.of(label)
            if role > best.get(knowledge_base, 0):
                best[knowledge_base] = role
        return best

    def drop_knowledge_base(self, knowledge_base: str) -> int:
        """Forget every grant on a deleted knowledge base (a new one of that name starts bare)."""
        with self.db.session(write=True) as session:
            result = session.execute(
                delete(RoleGrantRow).where(RoleGrantRow.knowledge_base == knowledge_base)
            )
            return rows_matched(result)
