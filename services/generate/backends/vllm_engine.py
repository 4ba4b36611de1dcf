"""The ``vllm`` backend: vLLM's async engine inside this process (GPU, tensor parallel).

vLLM batches concurrent requests itself (continuous batching), so unlike llama.cpp there is
no lock: every gRPC stream becomes one engine request, and a client that cancels aborts its
request so the scheduler frees its KV-cache blocks at once. vLLM is imported only in
``start``; importing this module (or ``services.generate``) never needs it, so the CPU tier
and its tests run without it. The module-level helpers are pure and unit-tested; the engine
path itself runs through vLLM's real engine on the CPU in ``tests/vllm_cpu_tier.py``
(``make test-vllm``).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.generate.backends import vllm_tools
from services.generate.backends.base import Backend
from services.generate.config import GenerateSettings
from services.generate.domain import Chunk, GenerationJob, ModelInfo, Sampling, Turn, Usage

log = logging.getLogger("zhiku.generate.vllm")


def engine_kwargs(settings: GenerateSettings) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments from the service settings."""
    kwargs: dict[str, Any] = {
        **settings.vllm_extra_args,
        "model": settings.vllm_model,
        "tensor_parallel_size": settings.vllm_tensor_parallel_size,
        "gpu_memory_utilization": settings.vllm_gpu_memory_utilization,
        "dtype": settings.vllm_dtype,
        "enable_prefix_caching": settings.vllm_enable_prefix_caching,
        "max_num_seqs": settings.vllm_max_num_seqs,
    }
    if settings.vllm_max_model_len is not None:
        kwargs["max_model_len"] = settings.vllm_max_model_len
    if settings.vllm_quantization:
        kwargs["quantization"] = settings.vllm_quantization
    if settings.served_model_name:
        kwargs["served_model_name"] = [settings.served_model_name]
    return kwargs


def sampling_kwargs(sampling: Sampling) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for one request (one completion, cumulative text)."""
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if sampling.stop:
        kwargs["stop"] = list(sampling.stop)
    return kwargs


def finish_reason(vllm_reason: str | None) -> str:
    """vLLM reports "stop", "length" or "abort"; the proto knows stop, length, cancelled."""
    if vllm_reason == "length":
        return "length"
    if vllm_reason == "abort":
        return "cancelled"
    return "stop"


def new_text(cumulative: str, sent: int) -> str:
    """The unsent tail of vLLM's cumulative output text."""
    return cumulative[sent:] if len(cumulative) > sent else ""


@dataclass
class AbortRecord:
    """The last request this backend aborted, for operators and for the CPU tier's tests."""

    request_id: str = ""
    completion_tokens: int = 0  # tokens the engine had produced when the client left


class VllmBackend(Backend):
    name = "vllm"
    counts_with_tokenizer = True
    tools_hint = (
        "set ZHIKU_GENERATE_VLLM_TOOL_CALL_PARSER to the model's vLLM tool parser (hermes for Qwen2.5)"
    )

    def __init__(self, settings: GenerateSettings) -> None:
        self._settings = settings
        self._model_id = settings.served_model_name or settings.vllm_model
        self._engine: Any = None
        self._tokenizer: Any = None
        self._window = settings.vllm_max_model_len or 0
        self._tool_parser: Any = None
        self.aborted = 0
        self.last_abort = AbortRecord()

    @property
    def engine(self) -> Any:
        """The running engine (``vllm.AsyncLLMEngine``), None before ``start``."""
        return self._engine

    async def start(self) -> None:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as error:
            raise FailedPrecondition(
                "backend vllm selected but vllm is not installed (pip install vllm on a GPU host)"
            ) from error
        args = AsyncEngineArgs(**engine_kwargs(self._settings))
        # Loads the weights (and on GPUs profiles memory, captures CUDA graphs): the service
        # reports SERVING only after this returns, so probes wait for a loaded engine.
        self._engine = AsyncLLMEngine.from_engine_args(args)
        get_tokenizer = getattr(self._engine, "get_tokenizer", None)
        tokenizer = get_tokenizer() if get_tokenizer is not None else self._engine.tokenizer
        self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer  # older: coroutine
        model_config = getattr(self._engine, "model_config", None)
        if model_config is None:
            model_config = await self._engine.get_model_config()
        self._window = int(model_config.max_model_len)
        if self._settings.vllm_tool_call_parser:
            self._tool_parser = vllm_tools.load_parser(self._settings.vllm_tool_call_parser, self._tokenizer)
        log.info("vLLM engine ready: %s (window %d)", self._settings.vllm_model, self._window)

    async def close(self) -> None:
        if self._engine is not None and hasattr(self._engine, "shutdown"):
            self._engine.shutdown()
        self._engine = None

    @property
    def can_call_tools(self) -> bool:
        return bool(self._settings.vllm_tool_call_parser)

    def models(self) -> list[ModelInfo]:
        window, tools = self._window, self.can_call_tools
        return [ModelInfo(id=self._model_id, backend=self.name, context_window=window, tools=tools)]

    @property
    def context_window(self) -> int:
        return self._window

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return super().count_tokens(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _render(self, messages: Sequence[Turn], tools: Sequence[dict[str, Any]] = ()) -> str:
        extra = {"tools": list(tools)} if tools else {}  # the model's template lists them
        rendered: str = self._tokenizer.apply_chat_template(
            [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=True, **extra
        )
        return rendered

    def count_prompt_tokens(self, messages: Sequence[Turn]) -> int:
        if self._tokenizer is None:
            return super().count_prompt_tokens(messages)
        return len(self._tokenizer.encode(self._render(messages), add_special_tokens=False))

    async def stream(self, job: GenerationJob) -> AsyncGenerator[Chunk, None]:
        if self._engine is None:
            raise FailedPrecondition("the vLLM engine is not started")
        from vllm import SamplingParams

        try:
            params = SamplingParams(**sampling_kwargs(job.sampling))
        except ValueError as error:
            raise InvalidArgument(f"sampling parameters rejected by vLLM: {error}") from error
        options = job.prompt.tools
        vllm_tools.check_choice(options)
        tools = options.tools if options.offered else ()
        if tools and self._tool_parser is None:
            raise FailedPrecondition("the vLLM tool parser is not loaded")
        request_id = f"{job.request_id or 'zhiku'}-{uuid.uuid4().hex[:12]}"
        outputs = self._engine.generate(self._render(job.prompt.messages, tools), params, request_id)
        sent = 0
        produced = 0
        finished = False
        try:
            async for output in outputs:
                completion = output.outputs[0]
                produced = len(completion.token_ids)
                delta = "" if tools else new_text(completion.text, sent)  # tools: parsed at the end
                if delta:
                    sent += len(delta)
                    yield Chunk(delta=delta)
                if output.finished:
                    finished = True
                    usage = Usage(
                        prompt_tokens=len(output.prompt_token_ids or ()),
                        completion_tokens=len(completion.token_ids),
                    )
                    reason = finish_reason(completion.finish_reason)
                    if tools:
                        text, calls = vllm_tools.parse_calls(self._tool_parser, completion.text, options)
                        if text:
                            yield Chunk(delta=text)
                        if calls:
                            yield Chunk(tool_calls=calls)
                            reason = "tool_calls" if reason == "stop" else reason
                    yield Chunk(finish_reason=reason, usage=usage)
                    return
                if job.cancel.is_set():
                    return
        finally:
            if not finished:
                # Closing the generator aborts in current vLLM; the explicit abort covers older
                # releases and is a no-op for a request the engine already dropped.
                await outputs.aclose()
                await self._engine.abort(request_id)
                self.aborted += 1
                self.last_abort = AbortRecord(request_id=request_id, completion_tokens=produced)
