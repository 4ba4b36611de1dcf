"""The blob store: uploaded originals under ``<blob_dir>/<kb>/<file_name>``.

Originals are kept so a knowledge base can be re-indexed (new model, new chunking) and so the
gateway can serve the cited file. Names are validated here as well as at the API edge, because
this is where a bad name would turn into a path. Writes go to a temporary file that is renamed
into place, so the worker reading a file while it is being replaced sees the old bytes or the
new ones, never a torn mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from services.common.errors import NotFound
from services.common.names import check_file_name, check_kb_name


def sha256_hex(data: bytes) -> str:
    """The content hash recorded for an upload (and checked by the worker before parsing)."""
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _kb_dir(self, kb: str) -> Path:
        path = self.root / check_kb_name(kb)
        if path.parent != self.root:  # defence in depth: the name rules already forbid this
            raise ValueError(f"knowledge base directory {path} escapes {self.root}")
        return path

    def path(self, kb: str, file_name: str) -> Path:
        kb_dir = self._kb_dir(kb)
        path = kb_dir / check_file_name(file_name)
        if path.parent != kb_dir:
            raise ValueError(f"file path {path} escapes {kb_dir}")
        return path

    def write(self, kb: str, file_name: str, content: bytes) -> Path:
        target = self.path(kb, file_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target

    def read(self, kb: str, file_name: str) -> bytes:
        try:
            return self.path(kb, file_name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the original of {file_name!r} in knowledge base {kb!r} is missing") from None

    def delete(self, kb: str, file_name: str) -> bool:
        try:
            self.path(kb, file_name).unlink()
        except FileNotFoundError:
            return False
        return True

    def delete_kb(self, kb: str) -> None:
        shutil.rmtree(self._kb_dir(kb), ignore_errors=True)

    def exists(self, kb: str, file_name: str) -> bool:
        return self.path(kb, file_name).is_file()
