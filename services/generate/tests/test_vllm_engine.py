"""The vllm backend's pure parts (vLLM itself runs only on the GPU tier)."""

from __future__ import annotations

import sys

import pytest

from services.common.errors import FailedPrecondition
from services.generate.backends.vllm_engine import (
    VllmBackend,
    engine_kwargs,
    finish_reason,
    new_text,
    sampling_kwargs,
)
from services.generate.domain import Sampling
from services.generate.tests.conftest import make_settings


def test_engine_kwargs_from_settings() -> None:
    settings = make_settings(
        backend="vllm",
        vllm_model="Qwen/Qwen2.5-14B-Instruct-AWQ",
        vllm_tensor_parallel_size=2,
        vllm_gpu_memory_utilization=0.85,
        vllm_max_model_len=16384,
        vllm_dtype="float16",
        vllm_quantization="awq",
        vllm_enable_prefix_caching=False,
        vllm_max_num_seqs=64,
    )
    assert engine_kwargs(settings) == {
        "model": "Qwen/Qwen2.5-14B-Instruct-AWQ",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "dtype": "float16",
        "enable_prefix_caching": False,
        "max_num_seqs": 64,
        "max_model_len": 16384,
        "quantization": "awq",
    }


def test_engine_kwargs_leave_unset_options_to_vllm() -> None:
    kwargs = engine_kwargs(make_settings(backend="vllm", served_model_name="zhiku-llm"))
    assert "max_model_len" not in kwargs
    assert "quantization" not in kwargs
    assert kwargs["served_model_name"] == ["zhiku-llm"]


def test_extra_engine_args_pass_through_but_named_settings_win() -> None:
    settings = make_settings(
        backend="vllm",
        vllm_tensor_parallel_size=2,
        vllm_extra_args={"load_format": "dummy", "enforce_eager": True, "tensor_parallel_size": 8},
    )
    kwargs = engine_kwargs(settings)
    assert kwargs["load_format"] == "dummy" and kwargs["enforce_eager"] is True
    assert kwargs["tensor_parallel_size"] == 2  # the GPU limit in the chart follows this one


def test_extra_engine_args_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIKU_GENERATE_VLLM_EXTRA_ARGS", '{"enforce_eager": true, "seed": 7}')
    kwargs = engine_kwargs(make_settings(backend="vllm"))
    assert (kwargs["enforce_eager"], kwargs["seed"]) == (True, 7)


def test_sampling_kwargs() -> None:
    assert sampling_kwargs(Sampling(temperature=0.2, top_p=0.9, max_tokens=128, stop=("</s>", "END"))) == {
        "n": 1,
        "max_tokens": 128,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["</s>", "END"],
    }
    assert "stop" not in sampling_kwargs(Sampling(temperature=0.0, top_p=1.0, max_tokens=1))


@pytest.mark.parametrize(
    ("vllm_reason", "ours"), [("stop", "stop"), ("length", "length"), ("abort", "cancelled"), (None, "stop")]
)
def test_finish_reason_mapping(vllm_reason: str | None, ours: str) -> None:
    assert finish_reason(vllm_reason) == ours


def test_new_text_is_the_unsent_tail_of_cumulative_output() -> None:
    assert new_text("Hello wor", 0) == "Hello wor"
    assert new_text("Hello world", 9) == "ld"
    assert new_text("Hello", 5) == ""


async def test_start_without_vllm_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail as if absent
    backend = VllmBackend(make_settings(backend="vllm"))
    with pytest.raises(FailedPrecondition, match="vllm is not installed"):
        await backend.start()
