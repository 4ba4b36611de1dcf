"""Which databases ``text2sql`` may query: those of the settings plus those an admin registered
through ``/v1/agent/databases`` (kept in the gateway's store).

Settings' databases are fixed for the process. Stored ones are read from the store at most
every ``REFRESH_S`` seconds (a change made on this replica applies at once, on others within
that time); an engine is kept while its URL stays the same and disposed when it changes or the
database is removed.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from services.gateway.agent.tools.sql_databases import RegisteredDatabase, open_databases

if TYPE_CHECKING:
    from services.gateway.config import GatewaySettings
    from services.gateway.store import GatewayStore

REFRESH_S = 5.0


class SqlDatabaseDirectory:
    def __init__(self, settings: GatewaySettings) -> None:
        self.timeout_s = settings.agent_sql_timeout_s
        self.max_rows = settings.agent_sql_max_rows
        self.configured = open_databases(
            settings.agent_sql_databases, timeout_s=self.timeout_s, max_rows=self.max_rows
        )
        self.store: GatewayStore | None = None  # given at start, with the rest of the store users
        self._stored: dict[str, RegisteredDatabase] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def open(self, name: str, url: str) -> RegisteredDatabase:
        """A database with this directory's limits (ValueError for an unsupported URL)."""
        return RegisteredDatabase(name=name, url=url, timeout_s=self.timeout_s, max_rows=self.max_rows)

    def known(self) -> dict[str, RegisteredDatabase]:
        """The databases as last loaded (for tool descriptions; calls use :meth:`current`)."""
        return {**self._stored, **self.configured}

    async def current(self) -> dict[str, RegisteredDatabase]:
        """Every database by name, stored ones reloaded when older than ``REFRESH_S``."""
        if self.store is not None and (
            self._loaded_at is None or time.monotonic() - self._loaded_at > REFRESH_S
        ):
            async with self._lock:
                if self._loaded_at is None or time.monotonic() - self._loaded_at > REFRESH_S:
                    await self._reload(self.store)
        return self.known()

    def forget(self) -> None:
        """Reload on the next call (after a change made on this replica)."""
        self._loaded_at = None

    async def _reload(self, store: GatewayStore) -> None:
        rows = await store.run(store.agent_databases.list)
        fresh: dict[str, RegisteredDatabase] = {}
        for row in rows:
            if row.name in self.configured:
                continue  # the settings win
            kept = self._stored.get(row.name)
            if kept is not None and kept.url == row.url:
                fresh[row.name] = kept
                continue
            try:
                fresh[row.name] = self.open(row.name, row.url)
            except ValueError:
                continue  # checked when registered; a hand-edited row is skipped
        for name, database in self._stored.items():
            if fresh.get(name) is not database:
                await asyncio.to_thread(database.dispose)
        self._stored = fresh
        self._loaded_at = time.monotonic()

    def close(self) -> None:
        for database in [*self._stored.values(), *self.configured.values()]:
            database.dispose()
