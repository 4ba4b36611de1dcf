"""Embed backends by the name ``ZHIKU_EMBED_BACKEND`` selects (no if/elif factory).

Both modules import only light libraries at import time; model engines load in ``start``.
"""

from __future__ import annotations

from collections.abc import Callable

from services.embed.backends.base import EmbedBackend
from services.embed.backends.local import LocalBackend
from services.embed.backends.tei import TeiBackend
from services.embed.config import EmbedSettings

BACKENDS: dict[str, Callable[[EmbedSettings], EmbedBackend]] = {
    "local": LocalBackend,
    "tei": TeiBackend,
}

__all__ = ["BACKENDS", "EmbedBackend"]
