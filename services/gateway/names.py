"""Name checks at the edge, so a bad name is a 422 before any service is called.

The rules themselves live in :mod:`services.common.names` (shared with the services that store by
these names owns them); the gateway applies the same functions, so its 422 and the service's
INVALID_ARGUMENT always agree. What is gateway-only is turning an uploaded file's client-side
name into the name it is stored under.
"""

from __future__ import annotations

from services.common.names import KB_NAME_MAX_CHARS, file_name_error, kb_name_error

__all__ = ["KB_NAME_MAX_CHARS", "file_name_error", "kb_name_error", "upload_file_name", "validate_kb_name"]


def validate_kb_name(name: str) -> str:
    """Return ``name`` unchanged, or raise ValueError with the reason (for pydantic fields)."""
    problem = kb_name_error(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def upload_file_name(raw: str | None) -> str:
    """The name a file is stored under: the last path component of what the client sent.

    Some clients send a full local path ("C:\\docs\\a.pdf"); only the base name is kept, and
    names that could address something else ("", "..", control characters) are refused.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    problem = file_name_error(name)
    if problem is not None:
        raise ValueError(problem)
    return name
