"""Several models in one generate service, and which one a request gets.

Each model (the top-level settings' one, the default, plus every entry of ``models``) is its
own backend behind its own :class:`Generator`: its own admission queue, sampling defaults,
context window and query-rewriting mode, so a slow answer model never queues the small one
that rewrites queries. A request names its model in ``model``; empty or ``default`` means the
default model, and a name served nowhere is NOT_FOUND with the names that are, so the gateway
answers 404 naming it. Follow-ups are made standalone by ``rewrite_model`` unless the
RewriteQuery call names a model itself.
"""

from __future__ import annotations

from collections.abc import Callable

from services.common.errors import NotFound
from services.generate.backends import Backend, create_backend
from services.generate.config import DEFAULT_MODEL_ALIAS, GenerateSettings
from services.generate.domain import ModelInfo
from services.generate.generator import Generator
from services.generate.prompting import PromptTemplates

BackendMaker = Callable[[GenerateSettings], Backend]


class ModelRouter:
    """The generators by model name; the default one answers requests that name none."""

    def __init__(self, default: Generator, named: dict[str, Generator], rewrite_model: str = "") -> None:
        self.default = default
        self.named = dict(named)
        self._default_ids = {model.id for model in default.models()} | {"", DEFAULT_MODEL_ALIAS}
        taken = sorted(self._default_ids & set(self.named))
        if taken:
            raise ValueError(
                f"ZHIKU_GENERATE_MODELS names {', '.join(taken)}, which is the default model's own "
                "name: pick another (or set ZHIKU_GENERATE_SERVED_MODEL_NAME for the default one)"
            )
        if rewrite_model and rewrite_model not in self.names():
            raise ValueError(
                f"ZHIKU_GENERATE_REWRITE_MODEL {rewrite_model!r} is not served here; "
                f"models: {', '.join(self.names())}"
            )
        self.rewrite_model = rewrite_model

    @classmethod
    def build(
        cls,
        settings: GenerateSettings,
        templates: PromptTemplates,
        backend: Backend | None = None,
        make_backend: BackendMaker = create_backend,
    ) -> ModelRouter:
        """A generator per configured model; ``backend`` (tests) replaces the default one's."""
        default = Generator(settings, backend or make_backend(settings), templates)
        named = {
            name: Generator(model_settings, make_backend(model_settings), templates)
            for name, model_settings in settings.named_models.items()
        }
        return cls(default, named, settings.rewrite_model)

    @property
    def generators(self) -> list[Generator]:
        return [self.default, *self.named.values()]

    @property
    def backends(self) -> list[Backend]:
        return [generator.backend for generator in self.generators]

    def names(self) -> list[str]:
        """Every name a request may use, the default model's first."""
        return [model.id for model in self.models()]

    def models(self) -> list[ModelInfo]:
        """What ListModels reports: the default model first, then the named ones as configured."""
        return [model for generator in self.generators for model in generator.models()]

    def resolve(self, model: str) -> Generator:
        """The generator serving ``model``; NOT_FOUND naming it (and what is served) otherwise."""
        if model in self._default_ids:
            return self.default
        found = self.named.get(model)
        if found is None:
            raise NotFound(f"model {model!r} is not served here; available: {', '.join(self.names())}")
        return found

    def rewriter(self, model: str = "") -> Generator:
        """The generator that makes follow-ups standalone: ``model`` when the call names one,
        else ``rewrite_model``, else the default."""
        return self.resolve(model or self.rewrite_model)
