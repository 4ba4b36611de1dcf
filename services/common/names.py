"""The naming rules for knowledge bases and files, shared by the gateway and the ingest service.

Both names end up as path components under the blob store (``<blob_dir>/<kb>/<file>``) and
as Qdrant collection names, so the rules are about safety first: nothing that can climb out
of the blob directory, nothing a filesystem or collection name cannot hold. Keeping them in one
module means the gateway's HTTP 400 and the service's INVALID_ARGUMENT always agree.
"""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

KB_NAME_MAX_CHARS = 64
# Knowledge bases of file chats (``tmp_<id>``): made and dropped by the gateway, kept by the
# qdrant backend in its shared collections whatever the layout.
TEMP_KB_PREFIX = "tmp_"
FILE_NAME_MAX_BYTES = 255

_KB_PUNCTUATION = frozenset("_-.")
# C0 and C1 controls (CR/LF included) and the line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidirectional formatting characters: a right-to-left override makes "evil\u202etxt.exe" read
# as "evilexe.txt" in listings and download prompts (the classic spoofing trick).
_BIDI_CONTROL = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def kb_name_error(name: str) -> str | None:
    """Why ``name`` is not a valid knowledge base name, or None when it is."""
    if not name:
        return "knowledge base name must not be empty"
    if len(name) > KB_NAME_MAX_CHARS:
        return f"knowledge base name is {len(name)} characters long; the limit is {KB_NAME_MAX_CHARS}"
    # str.isalnum is Unicode-aware: letters of every script (CJK included) and digits.
    if not all(ch.isalnum() or ch in _KB_PUNCTUATION for ch in name):
        return f"knowledge base name {name!r} may only hold letters (CJK included), digits, '_', '-' and '.'"
    if name == "." or ".." in name:
        return f"knowledge base name {name!r} must not be '.' or contain '..'"
    return None


def file_name_error(name: str) -> str | None:
    """Why ``name`` is not a valid file name, or None when it is."""
    if not name:
        return "file name must not be empty"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > FILE_NAME_MAX_BYTES:
        return f"file name is {size} bytes long in UTF-8; the limit is {FILE_NAME_MAX_BYTES}"
    if "/" in name or "\\" in name:
        return f"file name {name!r} must not contain '/' or '\\' (no directories)"
    if "\x00" in name:
        return "file name must not contain NUL characters"
    if _CONTROL.search(name):
        return f"file name {name!r} must not contain control characters (such as CR or LF)"
    if _BIDI_CONTROL.search(name):
        return f"file name {name!r} must not contain bidirectional control characters (such as U+202E)"
    if name == "." or ".." in name:
        return f"file name {name!r} must not be '.' or contain '..'"
    if name.strip() != name or not name.strip():
        return f"file name {name!r} must not start or end with whitespace"
    return None


def check_kb_name(name: str) -> str:
    """Return ``name`` unchanged, or raise InvalidArgument with the precise reason."""
    error = kb_name_error(name)
    if error:
        raise InvalidArgument(error)
    return name


def check_file_name(name: str) -> str:
    """Return ``name`` unchanged, or raise InvalidArgument with the precise reason."""
    error = file_name_error(name)
    if error:
        raise InvalidArgument(error)
    return name


def is_temporary_kb(name: str) -> bool:
    """Whether ``name`` is a file chat's temporary knowledge base."""
    return name.startswith(TEMP_KB_PREFIX)


# A knowledge base's vector collection after a migration to another embedding model.
_VERSIONED_COLLECTION = re.compile(r"^(?P<base>.+)__v(?P<version>\d+)$")


def next_collection(kb: str, active: str) -> str:
    """``<kb>__v<n+1>`` after ``<kb>__v<n>`` (``__v2`` after the original), within the length
    limit of a name: the collection a migration of ``kb`` away from ``active`` fills."""
    found = _VERSIONED_COLLECTION.match(active) if active != kb else None
    version = int(found["version"]) + 1 if found else 2
    suffix = f"__v{version}"
    return kb[: KB_NAME_MAX_CHARS - len(suffix)] + suffix


def is_collection_of(kb: str, collection: str) -> bool:
    """Whether ``collection`` is a name :func:`next_collection` gives ``kb``'s vectors (its own
    name or ``<kb>__v<n>``). The gateway's guard checks a search's collection with it: access
    is decided on the knowledge base, so the collection must be one of that knowledge base's."""
    if collection == kb:
        return True
    found = _VERSIONED_COLLECTION.match(collection)
    if found is None:
        return False
    suffix = collection[len(found["base"]) :]
    return found["base"] == kb[: KB_NAME_MAX_CHARS - len(suffix)]
