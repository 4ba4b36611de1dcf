"""What every connector yields: items with a knowledge-base file name and a way to fetch them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# Sub-folders of a source flatten into one file name (knowledge bases have no folders).
PATH_SEPARATOR = "__"


class SourceUnavailable(Exception):
    """The source as a whole cannot be listed (unreachable, refused, 404): the sync fails."""


class ItemUnavailable(Exception):
    """One item cannot be fetched or is over a limit: reported, the others go on."""


@dataclass(frozen=True)
class SourceItem:
    # Where it comes from (a relative path, an object key, a URL): shown in the report.
    item: str
    file_name: str
    fetch: Callable[[], bytes]


class Connector(Protocol):
    def list_items(self) -> list[SourceItem]:
        """Every item of the source now; raises SourceUnavailable."""
        ...


def file_name_for(path: str) -> str:
    """The knowledge-base file name of a path inside a source ("a/b.md" -> "a__b.md")."""
    return PATH_SEPARATOR.join(part for part in path.split("/") if part)
