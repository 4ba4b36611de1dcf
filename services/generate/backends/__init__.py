"""Backend registry: the ``backend`` setting names a factory here (no if/elif chains).

Backend modules import their heavy libraries (llama_cpp, openai, vllm) inside ``start``, so
this registry imports cheaply and a process only ever loads the one it runs.
"""

from __future__ import annotations

from collections.abc import Callable

from services.generate.backends.base import Backend
from services.generate.backends.extractive import ExtractiveBackend
from services.generate.backends.llamacpp import LlamaCppBackend
from services.generate.backends.openai_compat import OpenAIBackend
from services.generate.backends.vllm_engine import VllmBackend
from services.generate.config import GenerateSettings

BackendFactory = Callable[[GenerateSettings], Backend]

BACKENDS: dict[str, BackendFactory] = {
    "llamacpp": LlamaCppBackend,
    "openai": OpenAIBackend,
    "vllm": VllmBackend,
    "extractive": ExtractiveBackend,
}


def create_backend(settings: GenerateSettings) -> Backend:
    return BACKENDS[settings.backend](settings)


__all__ = ["BACKENDS", "Backend", "BackendFactory", "create_backend"]
