"""Backend registry: name -> factory. Factories import their backend lazily, so choosing
``edge`` never imports qdrant-client and the optimizer child process stays light."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.retrieve.backends.base import RetrieveBackend
    from services.retrieve.config import RetrieveSettings

BackendFactory = Callable[["RetrieveSettings"], "RetrieveBackend"]


def _edge(settings: RetrieveSettings) -> RetrieveBackend:
    from services.retrieve.backends.edge import EdgeBackend

    return EdgeBackend(settings)


def _qdrant(settings: RetrieveSettings) -> RetrieveBackend:
    from services.retrieve.backends.qdrant import QdrantBackend

    return QdrantBackend(settings)


BACKENDS: dict[str, BackendFactory] = {"edge": _edge, "qdrant": _qdrant}


def create_backend(settings: RetrieveSettings) -> RetrieveBackend:
    return BACKENDS[settings.backend](settings)
