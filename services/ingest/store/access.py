"""A file's access list (who may read its text) and the tokens its chunks carry.

The catalog keeps the list on the file row (JSON, empty for an open file); every chunk point
carries the list as ``acl`` tokens, which the retrieve service matches against a reader's
tokens inside the vector query: ``*`` for an open file, else ``user:<id>`` and
``group:<name>``. A restricted list always holds its uploader, so nobody uploads a file they
could not read back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from zhiku.v1 import ingest_pb2

OPEN_TOKEN = "*"
MAX_ENTRIES = 1000
MAX_ENTRY_CHARS = 255


def _entries(values: Iterable[str], what: str) -> tuple[str, ...]:
    """Validated, de-duplicated entries in their given order."""
    entries = tuple(dict.fromkeys(value.strip() for value in values))
    if len(entries) > MAX_ENTRIES:
        raise InvalidArgument(f"access {what}: {len(entries)} entries; the limit is {MAX_ENTRIES}")
    for entry in entries:
        if not entry:
            raise InvalidArgument(f"access {what}: an entry is empty")
        if len(entry) > MAX_ENTRY_CHARS:
            raise InvalidArgument(f"access {what}: {entry[:40]!r}... is over {MAX_ENTRY_CHARS} characters")
        if any(ch.isspace() or not ch.isprintable() for ch in entry):
            raise InvalidArgument(f"access {what}: {entry!r} contains white space or control characters")
    return entries


@dataclass(frozen=True)
class FileAccessList:
    """Users (ids) and groups (names) who may read a file; both empty: everyone who may view
    the knowledge base."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @property
    def restricted(self) -> bool:
        return bool(self.users or self.groups)

    @classmethod
    def of(cls, users: Iterable[str] = (), groups: Iterable[str] = ()) -> FileAccessList:
        return cls(users=_entries(users, "users"), groups=_entries(groups, "groups"))

    @classmethod
    def from_pb(cls, access: ingest_pb2.FileAccess) -> FileAccessList:
        return cls.of(access.users, access.groups)

    def to_pb(self) -> ingest_pb2.FileAccess:
        return ingest_pb2.FileAccess(users=list(self.users), groups=list(self.groups))

    def with_uploader(self, uploader: str) -> FileAccessList:
        """The uploader stays on a restricted list; an open list stays open."""
        if not self.restricted or not uploader or uploader in self.users:
            return self
        return FileAccessList(users=(*self.users, uploader), groups=self.groups)

    def tokens(self) -> list[str]:
        """The ``acl`` every chunk of the file carries."""
        if not self.restricted:
            return [OPEN_TOKEN]
        return [*(f"user:{user}" for user in self.users), *(f"group:{group}" for group in self.groups)]

    def to_json(self) -> str:
        return json.dumps({"users": list(self.users), "groups": list(self.groups)}) if self.restricted else ""

    @classmethod
    def from_json(cls, stored: str | None) -> FileAccessList:
        if not stored:
            return cls()
        value = json.loads(stored)
        return cls(users=tuple(value.get("users", ())), groups=tuple(value.get("groups", ())))


OPEN = FileAccessList()
