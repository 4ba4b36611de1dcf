"""Where to send the browser after sign-in: a path on this site, never another site.

``next`` arrives from a link anyone can craft (``/v1/auth/oidc/login?next=...``), so anything
a browser could read as another origin is refused: a scheme, a host, ``//host`` and
``/\\host`` (browsers treat a backslash as a slash), and control characters or spaces, which
some browsers strip before resolving the URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_NEXT = "/"
NEXT_MAX_CHARS = 2000


def next_path_error(value: str) -> str | None:
    """Why ``value`` is not a local path, or None when it is one."""
    if len(value) > NEXT_MAX_CHARS:
        return f"next is longer than {NEXT_MAX_CHARS} characters"
    if not value.startswith("/") or value.startswith("//"):
        return "next must be a path on this site, starting with a single '/'"
    if "\\" in value:
        return "next must not contain a backslash"
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value):
        return "next must not contain spaces or control characters"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "next must be a path on this site, not a URL"
    return None
