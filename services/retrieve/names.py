"""Collection (knowledge-base) name validation.

Names become directory names of the edge backend and collection names on a Qdrant server, so
the rule is strict enough that a name can never escape the data directory: 1..64 characters,
each a letter (any script, CJK included), a digit, ``_``, ``-`` or ``.``; never ``.``/``..``
alone and never containing ``..``. Everything else is INVALID_ARGUMENT.
"""

from __future__ import annotations

from services.common.errors import InvalidArgument

MAX_NAME_LENGTH = 64
_PUNCTUATION = frozenset("_-.")


def validate_collection_name(name: str) -> str:
    """Return ``name`` unchanged when it is a safe collection name, else raise InvalidArgument."""
    if not name:
        raise InvalidArgument("collection name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"collection name is longer than {MAX_NAME_LENGTH} characters: {name[:80]!r}")
    bad = sorted({ch for ch in name if not (ch.isalnum() or ch in _PUNCTUATION)})
    if bad:
        raise InvalidArgument(
            f"collection name {name!r} contains forbidden characters {''.join(bad)!r}; "
            "use letters, digits, '_', '-' and '.'"
        )
    if name == "." or ".." in name:
        raise InvalidArgument(f"collection name {name!r} must not be '.' or contain '..'")
    return name
