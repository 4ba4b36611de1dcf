"""The gateway's store: conversations, messages, feedback, API keys, file chats, the agent's
registered SQL databases, the audit trail, and identity (users, groups, role grants,
sessions), in SQL.

Repositories are synchronous SQLAlchemy; async callers go through :meth:`GatewayStore.run`,
which runs them in a worker thread so a slow database never stalls the event loop. The file
chats' repository lives with file chats (``services.gateway.file_chat.records``); every table
is declared in ``tables``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from services.gateway.file_chat.records import FileChatRepo
from services.gateway.store.agent_databases import AgentDatabaseRepo
from services.gateway.store.audit import AuditRepo
from services.gateway.store.conversations import ConversationRepo
from services.gateway.store.database import Database
from services.gateway.store.grants import GrantRepo
from services.gateway.store.keys import KeyRepo
from services.gateway.store.sessions import SessionRepo
from services.gateway.store.sso import SsoRepo
from services.gateway.store.users import GroupRepo, UserRepo

P = ParamSpec("P")
T = TypeVar("T")


class GatewayStore:
    def __init__(self, url: str, sqlite_busy_timeout_s: float = 30.0) -> None:
        self.db = Database(url, sqlite_busy_timeout_s)
        self.conversations = ConversationRepo(self.db)
        self.keys = KeyRepo(self.db)
        self.file_chats = FileChatRepo(self.db)
        self.agent_databases = AgentDatabaseRepo(self.db)
        self.users = UserRepo(self.db)
        self.groups = GroupRepo(self.db)
        self.grants = GrantRepo(self.db)
        self.sessions = SessionRepo(self.db)
        self.audit = AuditRepo(self.db)
        self.sso = SsoRepo(self.db)

    def create_schema(self) -> None:
        self.db.create_schema()

    def dispose(self) -> None:
        self.db.dispose()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)
