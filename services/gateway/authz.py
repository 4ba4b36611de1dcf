"""The one place that decides what a caller may do with a knowledge base.

Every knowledge base a request names, wherever it names it (a path, ``knowledge_base``,
``knowledge_bases``, a ``kb:`` model, a file chat, a conversation's stored knowledge base,
Chatchat's ``knowledge_base_name``, a tool), reaches the ingest or retrieve service as a field
of an RPC. :mod:`services.gateway.kb_guard` checks every such RPC with :class:`KnowledgeBaseGuard`
before it leaves the gateway, for the caller this module keeps in a context variable, so a
route cannot forget a check and a new route or field is covered without code of its own.

The rules:

- an open gateway (no API keys and no users) allows everything; so does the gateway itself
  (background work such as the file-chat sweeper runs as :data:`GATEWAY`);
- a key limited to some knowledge bases may use only those;
- the global admin (an admin user, an admin key, an environment key) may do everything;
- a person (a signed-in user, or a key they own, within the key's list) needs a role on the
  knowledge base: ``viewer`` to view, ``editor`` to edit, ``owner`` to manage, held
  themselves or through one of their groups; any person may create a knowledge base (and
  becomes its owner). Keys that belong to nobody (older than users) keep their list alone;
- a file chat's temporary knowledge base belongs to the key that made it (admin keys may use
  any, as they see every conversation), and ``tmp_`` names are created only by file chats;
- a name the caller may not use is answered exactly like a name that does not exist, so a key
  cannot even learn which names exist. Creating a name the caller may not use is refused as
  such, whether or not it exists.

Roles are read from the store's grants, cached per person for ``ROLE_CACHE_TTL_S`` (a change
made on this replica clears the cache at once). Which routes need which permission is the
route table's business (:mod:`services.gateway.permissions`); this module answers for one name.

Document access lists narrow what a viewer reads within a knowledge base: the guard says who
sees every document (:meth:`KnowledgeBaseGuard.sees_every_document`) and :func:`reader_acl`
gives everyone else's tokens, which the interceptor puts on every search.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final

from async_lru import alru_cache

from services.gateway.access import CACHE_TTL_S, Principal
from services.gateway.file_chat.records import TEMP_KB_PREFIX, FileChat
from services.gateway.store import GatewayStore
from services.gateway.store.grants import HolderKind, Role
from zhiku.v1 import ingest_pb2

ROLE_CACHE_TTL_S = CACHE_TTL_S


class Permission(enum.Enum):
    VIEW = "view"  # search, chat, list files, download, read jobs
    EDIT = "edit"  # upload, reindex, delete files, cancel jobs
    MANAGE = "manage"  # delete the knowledge base
    CREATE = "create"  # create a knowledge base of that name


# The least role each permission takes (creating needs none: any person may).
ROLE_FOR: Final[dict[Permission, Role]] = {
    Permission.VIEW: Role.VIEWER,
    Permission.EDIT: Role.EDITOR,
    Permission.MANAGE: Role.OWNER,
}


class _Unknown:
    """No caller was established: refuse, so a code path that lost its request context fails
    closed instead of running unchecked."""

    def __repr__(self) -> str:
        return "UNKNOWN_CALLER"


UNKNOWN_CALLER: Final = _Unknown()
# The gateway acting for itself (and an open gateway's anonymous callers): allowed everything.
GATEWAY: Final[None] = None

Caller = Principal | None
AnyCaller = Caller | _Unknown
_caller: ContextVar[Caller | _Unknown] = ContextVar("zhiku_caller", default=UNKNOWN_CALLER)


def current_caller() -> Caller | _Unknown:
    return _caller.get()


@contextlib.contextmanager
def acting_as(caller: AnyCaller) -> Iterator[None]:
    """Run the block on behalf of ``caller`` (the access middleware, background tasks);
    :data:`UNKNOWN_CALLER` for anonymous calls of public routes, which reach nothing guarded."""
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)


# The token every reader holds: chunks of files without an access list carry it.
OPEN_TOKEN = "*"


def reader_acl(caller: Principal) -> list[str]:
    """The document-access tokens a caller reads with: ``*`` (open files), ``user:<id>`` and
    ``group:<name>`` for each of its groups; the one place they are computed."""
    tokens = [OPEN_TOKEN]
    if caller.user_id:
        tokens.append(f"user:{caller.user_id}")
    tokens.extend(f"group:{group}" for group in sorted(caller.groups))
    return tokens


def may_read(caller: Principal, access: ingest_pb2.FileAccess) -> bool:
    """Whether a restricted reader may read a file with this access list (the same rule the
    retrieve service applies to its chunks with :func:`reader_acl`'s tokens)."""
    if not access.users and not access.groups:
        return True
    return caller.user_id in access.users or not caller.groups.isdisjoint(access.groups)


def is_temporary(name: str) -> bool:
    return name.startswith(TEMP_KB_PREFIX)


class KnowledgeBaseGuard:
    """Answers "may this caller do this with that knowledge base?" from the caller's key and,
    for temporary knowledge bases, the file chat's owner in the gateway store."""

    def __init__(self) -> None:
        self.store: GatewayStore | None = None  # given at start, with the rest of the store users
        self._roles = alru_cache(maxsize=10_000, ttl=ROLE_CACHE_TTL_S)(self._load_roles)

    def forget_roles(self) -> None:
        """Drop cached roles (after a grant, a membership, a user or a group changed here)."""
        self._roles.cache_clear()

    async def permits(self, caller: Caller | _Unknown, name: str, permission: Permission) -> bool:
        if caller is GATEWAY:
            return True
        if isinstance(caller, _Unknown):
            return False
        if is_temporary(name):
            chat = await self._file_chat_of(name)
            if chat is not None:
                return caller.admin or chat.owner == caller.owner
            if permission is Permission.CREATE:
                return False  # tmp_ names are the file chats'
            # A tmp_ name without a file chat: it does not exist (or is being swept).
        if not caller.may_use(name):
            return False
        if caller.admin or caller.user_id is None or is_temporary(name):
            return True
        if permission is Permission.CREATE:
            return True
        role = await self.role(caller, name)
        return role is not None and role >= ROLE_FOR[permission]

    async def role(self, caller: Principal, name: str) -> Role | None:
        """The person's best role on ``name`` (their own grant or a group's), ignoring admin."""
        if caller.user_id is None:
            return None
        return (await self._roles(caller.user_id, tuple(sorted(caller.groups)))).get(name)

    async def _load_roles(self, user_id: str, groups: tuple[str, ...]) -> dict[str, Role]:
        if self.store is None:
            return {}
        return await self.store.run(self.store.grants.roles_of, user_id, groups)

    async def created(self, caller: Caller | _Unknown, name: str) -> None:
        """A person created ``name``: they own it (admins too, so it shows in their members)."""
        if isinstance(caller, _Unknown) or caller is None or caller.user_id is None or is_temporary(name):
            return
        if self.store is None:
            return
        await self.store.run(self.store.grants.set, name, HolderKind.USER, caller.user_id, Role.OWNER)
        self.forget_roles()

    async def deleted(self, name: str) -> None:
        """``name`` is gone: its grants go too, so a new one of that name starts unshared."""
        if self.store is None:
            return
        await self.store.run(self.store.grants.drop_knowledge_base, name)
        self.forget_roles()

    async def sees_every_document(self, caller: Caller | _Unknown, name: str) -> bool:
        """Whether the caller reads every file of the knowledge base whatever its access list:
        the gateway itself (and an open gateway's callers), admins (environment keys are
        admins), the knowledge base's owners, and a file chat's owner in its temporary one."""
        if caller is GATEWAY:
            return True
        if isinstance(caller, _Unknown):
            return False
        if caller.admin or is_temporary(name):
            return True
        return await self.role(caller, name) is Role.OWNER

    async def visible(self, caller: Caller | _Unknown, names: list[str]) -> list[str]:
        """``names`` a listing may show: those the caller may view, file chats' never (they
        are reached through their file chat, not browsed)."""
        temporary = await self._temporary_names() if any(map(is_temporary, names)) else set()
        shown = []
        for name in names:
            if name not in temporary and await self.permits(caller, name, Permission.VIEW):
                shown.append(name)
        return shown

    async def _file_chat_of(self, name: str) -> FileChat | None:
        if self.store is None:
            return None
        return await self.store.run(self.store.file_chats.of_knowledge_base, name)

    async def _temporary_names(self) -> set[str]:
        if self.store is None:
            return set()
        return await self.store.run(self.store.file_chats.knowledge_bases)
