"""A directory on the server (a mounted volume), confined to the configured sources root.

Only paths under ``ZHIKU_INGEST_SOURCES_ROOT`` are accepted: the path a user gives is
resolved (symlinks and ``..`` included) and refused unless it stays inside the root, and each
file found is checked the same way, so a symlink cannot lead a sync out of the root either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from services.common.errors import InvalidArgument
from services.ingest.sources.items import ItemUnavailable, SourceItem, SourceUnavailable, file_name_for


def confined_path(root: Path | None, relative: str) -> Path:
    """``root / relative`` resolved, or InvalidArgument when it is not inside ``root``."""
    if root is None:
        raise InvalidArgument(
            "directory sources are disabled: the ingest service has no ZHIKU_INGEST_SOURCES_ROOT"
        )
    if not relative or "\x00" in relative:
        raise InvalidArgument("a directory source needs a path relative to the sources root")
    if Path(relative).is_absolute():
        raise InvalidArgument(f"path {relative!r} must be relative to the sources root, not absolute")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise InvalidArgument(f"path {relative!r} leads outside the sources root")
    return resolved


class DirectoryConnector:
    def __init__(self, root: Path | None, relative: str, max_bytes: int) -> None:
        self.root = root
        self.relative = relative
        self.max_bytes = max_bytes

    def list_items(self) -> list[SourceItem]:
        try:
            base = confined_path(self.root, self.relative)
        except InvalidArgument as error:
            raise SourceUnavailable(str(error)) from None
        if not base.is_dir():
            raise SourceUnavailable(f"directory {self.relative!r} does not exist under the sources root")
        items: list[SourceItem] = []
        for folder, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(folder) / name
                relative = path.relative_to(base).as_posix()
                items.append(SourceItem(relative, file_name_for(relative), self._reader(path, relative)))
        return items

    def _reader(self, path: Path, relative: str) -> Callable[[], bytes]:
        root = self.root
        max_bytes = self.max_bytes

        def read() -> bytes:
            real = path.resolve()
            if root is None or not real.is_relative_to(root):
                raise ItemUnavailable("a link that leads outside the sources root")
            try:
                size = real.stat().st_size
                if size > max_bytes:
                    raise ItemUnavailable(f"{size} bytes; the limit is {max_bytes}")
                return real.read_bytes()
            except OSError as error:
                raise ItemUnavailable(f"cannot read {relative}: {error.strerror or error}") from None

        return read
