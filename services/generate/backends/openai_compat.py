"""The ``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` server, streamed.

Works with OpenAI itself, a vLLM or TGI or llama.cpp server, DeepSeek, Qwen's DashScope
compatible mode... Usage comes from the upstream (``stream_options.include_usage``) when it
sends it. Closing the stream closes the HTTP response, so a gRPC client that cancels also
cancels the upstream request (servers stop generating when the connection drops).
Upstream failures map to the stack's errors: unreachable or 5xx -> UNAVAILABLE, 429 ->
RESOURCE_EXHAUSTED, 400/422 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 401/403 ->
FAILED_PRECONDITION (our configuration is wrong, not the caller's request).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from services.common.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ZhikuError,
)
from services.generate.backends.base import Backend
from services.generate.config import GenerateSettings
from services.generate.domain import Chunk, Job, ModelInfo, Usage

log = logging.getLogger("zhiku.generate.openai")

_ERROR_BY_STATUS: dict[int, type[ZhikuError]] = {
    400: InvalidArgument,
    401: FailedPrecondition,
    403: FailedPrecondition,
    404: NotFound,
    413: InvalidArgument,
    422: InvalidArgument,
    429: ResourceExhausted,
}
CONNECT_TIMEOUT_S = 5.0


def upstream_error(error: Exception, base_url: str) -> ZhikuError:
    """Map an ``openai`` SDK exception to the error the caller should see."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return DependencyUnavailable(f"OpenAI-compatible upstream {base_url} timed out")
    if isinstance(error, openai.APIConnectionError):
        return DependencyUnavailable(f"OpenAI-compatible upstream {base_url} is unreachable: {error}")
    if isinstance(error, openai.APIStatusError):
        kind = _ERROR_BY_STATUS.get(error.status_code, DependencyUnavailable)
        return kind(f"OpenAI-compatible upstream {base_url} answered {error.status_code}: {error.message}")
    return DependencyUnavailable(f"OpenAI-compatible upstream {base_url} failed: {error}")


def request_kwargs(job: Job, model: str) -> dict[str, Any]:
    """The ``chat.completions.create`` arguments for a job (pure, unit-tested)."""
    sampling = job.sampling
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": job.prompt.message_dicts(),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if sampling.stop:
        kwargs["stop"] = list(sampling.stop)
    return kwargs


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, settings: GenerateSettings) -> None:
        self._settings = settings
        self._base_url = settings.openai_base_url.rstrip("/")
        self._model = settings.openai_model
        self._model_id = settings.served_model_name or settings.openai_model
        self._client: Any = None

    async def start(self) -> None:
        from openai import AsyncOpenAI, Timeout

        settings = self._settings
        self._client = AsyncOpenAI(
            base_url=self._base_url,
            api_key=settings.openai_api_key.get_secret_value(),
            timeout=Timeout(
                settings.openai_timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.openai_timeout_s)
            ),
            max_retries=settings.openai_max_retries,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def models(self) -> list[ModelInfo]:
        window = self._settings.openai_context_window
        return [ModelInfo(id=self._model_id, backend=self.name, context_window=window)]

    @property
    def context_window(self) -> int:
        return self._settings.openai_context_window

    async def stream(self, job: Job) -> AsyncIterator[Chunk]:
        import openai

        if self._client is None:
            raise FailedPrecondition("the OpenAI client is not started")
        try:
            upstream = await self._client.chat.completions.create(**request_kwargs(job, self._model))
        except openai.OpenAIError as error:
            raise upstream_error(error, self._base_url) from error
        finish = "stop"
        usage: Usage | None = None
        try:
            async for event in upstream:
                if event.usage is not None:
                    usage = Usage(
                        prompt_tokens=event.usage.prompt_tokens,
                        completion_tokens=event.usage.completion_tokens,
                    )
                for choice in event.choices[:1]:
                    if choice.delta is not None and choice.delta.content:
                        yield Chunk(delta=choice.delta.content)
                    if choice.finish_reason:
                        finish = "length" if choice.finish_reason == "length" else "stop"
                if job.cancel.is_set():
                    return
        except openai.OpenAIError as error:  # the SDK wraps transport errors mid-stream too
            raise upstream_error(error, self._base_url) from error
        finally:
            await upstream.close()  # closes the HTTP response: the upstream stops generating
        yield Chunk(finish_reason=finish, usage=usage)
