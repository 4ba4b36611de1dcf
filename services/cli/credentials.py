"""What ``zhiku login`` keeps: per gateway URL, a session (cookie + CSRF token) or an API key.

The file is ``$ZHIKU_CONFIG``, else ``$XDG_CONFIG_HOME/zhiku/config.json``, else
``~/.config/zhiku/config.json``. It holds secrets, so it is written owner-only (0600, its
folder 0700) through a temporary file and a rename: a crash never leaves half a file, and the
secret never exists with wider permissions, even for a moment. An explicit ``--api-key`` /
``ZHIKU_API_KEY`` always wins over what is stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SESSION_COOKIE = "zhiku_session"


@dataclass(frozen=True)
class Credentials:
    """One gateway's stored sign-in: a session (password login) or a key (SSO login)."""

    email: str = ""
    session: str | None = None
    csrf_token: str | None = None
    api_key: str | None = None
    key_id: str | None = None


def config_path() -> Path:
    explicit = os.environ.get("ZHIKU_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "zhiku" / "config.json"


def _key(url: str) -> str:
    return url.rstrip("/")


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the zhiku config file {path}: {error}") from None
    return document if isinstance(document, dict) else {}


def _write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, ensure_ascii=False)
        os.chmod(temporary, 0o600)  # an umask cannot widen it, but an existing file might be wider
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load(url: str, path: Path | None = None) -> Credentials | None:
    """The stored sign-in for this gateway, or None."""
    entry = _read(path or config_path()).get("gateways", {}).get(_key(url))
    if not isinstance(entry, dict):
        return None
    fields = {name: entry.get(name) for name in Credentials.__dataclass_fields__}
    return Credentials(**{name: value for name, value in fields.items() if value is not None})


def save(url: str, credentials: Credentials, path: Path | None = None) -> Path:
    """Store (replace) the sign-in for this gateway; other gateways' entries stay."""
    target = path or config_path()
    document = _read(target)
    gateways = document.setdefault("gateways", {})
    gateways[_key(url)] = {name: value for name, value in asdict(credentials).items() if value}
    _write(target, document)
    return target


def forget(url: str, path: Path | None = None) -> bool:
    """Drop this gateway's sign-in; True when there was one."""
    target = path or config_path()
    document = _read(target)
    gateways = document.get("gateways", {})
    if _key(url) not in gateways:
        return False
    del gateways[_key(url)]
    _write(target, document)
    return True
