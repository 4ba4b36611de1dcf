"""One generation end to end, independent of gRPC: admit, build the prompt, stream, account.

The servicer stays a converter; this class owns the policies every backend shares: sampling
defaults, the model check, fitting the prompt into the window while reserving room for the
answer, bounded concurrency with a bounded wait (``admission.py``), usage and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TypeVar

from services.common.errors import InvalidArgument, NotFound
from services.common.logging import current_request_id
from services.generate.admission import Admission
from services.generate.backends.base import Backend
from services.generate.config import DEFAULT_MODEL_ALIAS, GenerateSettings
from services.generate.domain import (
    Chunk,
    GenerationJob,
    GenerationRequest,
    ModelInfo,
    Prompt,
    Sampling,
    Turn,
    Usage,
)
from services.generate.grounding import abstains, check_answer
from services.generate.metrics import ABSTENTIONS, ITL, REPETITIONS_CUT, TOKENS, TTFT
from services.generate.prompting import PromptBuilder, PromptTemplates, earlier_subject
from services.generate.repetition import RepetitionGuard
from services.generate.rewriting import rewrite_with_terms
from services.generate.text import approx_token_count, detect_language

A = TypeVar("A")
R = TypeVar("R")

# A condensed question longer than this is the model rambling, not a question: fall back.
CONDENSE_MAX_TOKENS = 96
CONDENSE_MAX_CHARS = 300

log = logging.getLogger("zhiku.generate")


class Generator:
    def __init__(self, settings: GenerateSettings, backend: Backend, templates: PromptTemplates) -> None:
        self.settings = settings
        self.backend = backend
        self.builder = PromptBuilder(templates, history_turns=settings.history_turns)
        self.admission = Admission(
            backend.name,
            slots=self._slots(settings, backend),
            max_waiting=settings.max_waiting,
            max_wait_s=settings.max_queue_wait_s,
        )

    @staticmethod
    def _slots(settings: GenerateSettings, backend: Backend) -> int:
        """``max_concurrency``, but never more than the backend runs at once: a call admitted
        past that would wait inside the backend, where no bound applies."""
        if backend.max_parallel and settings.max_concurrency > backend.max_parallel:
            log.warning(
                "max_concurrency %d is more than backend %s runs at once; using %d",
                settings.max_concurrency,
                backend.name,
                backend.max_parallel,
            )
            return backend.max_parallel
        return settings.max_concurrency

    def models(self) -> list[ModelInfo]:
        return self.backend.models()

    def _check_model(self, model: str) -> None:
        """Empty or ``default`` means the served model, so clients need not know its file name."""
        served = [m.id for m in self.backend.models()]
        if model and model != DEFAULT_MODEL_ALIAS and model not in served:
            raise NotFound(f"model {model!r} is not served here; available: {', '.join(served)}")

    def _check_capabilities(self, request: GenerationRequest) -> None:
        """Refuse what the backend would silently drop: tools, tool turns, structured output."""
        backend = self.backend
        if request.uses_tools and not backend.can_call_tools:
            field = "tools" if request.tools.tools else "messages"
            what = "tools (tool calling)" if field == "tools" else "messages with tool calls or tool results"
            raise InvalidArgument(f"{field}: backend {backend.name} cannot take {what}: {backend.tools_hint}")
        kind = request.tools.response_type
        if kind not in backend.response_formats:
            raise InvalidArgument(
                f"response_format type {kind!r} is not supported by backend {backend.name} "
                f"(supported: {', '.join(sorted(backend.response_formats))})"
            )

    def prepare(self, request: GenerationRequest) -> tuple[Prompt, Sampling]:
        """Prompt and sampling for ``request``; CPU work where the backend tokenizes (then run
        off the event loop)."""
        settings = self.settings
        window = self.backend.context_window
        wanted = request.max_tokens or settings.max_tokens_default
        # Reserve room for the answer, but never more than half the window: passages matter more.
        reserve = min(wanted, window // 2)
        if request.uses_tools:
            prompt = self.builder.build_tool_chat(request, self.backend, window=window, reserve=reserve)
        else:
            prompt = self.builder.build(request, self.backend, window=window, reserve=reserve)
        sampling = Sampling(
            temperature=settings.temperature_default if request.temperature is None else request.temperature,
            top_p=settings.top_p_default if request.top_p is None else request.top_p,
            max_tokens=max(1, min(wanted, window - prompt.prompt_tokens)),
            stop=request.stop,
        )
        return prompt, sampling

    async def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Text deltas, then one final chunk with finish_reason and usage.

        Grounded requests whose passages cannot answer get the abstention reply at once, with
        ``abstained`` on the first chunk, without waiting for a slot or running the model;
        every other grounded answer gets the sentence check on its final chunk."""
        self._check_model(request.model)
        self._check_capabilities(request)
        # With tools the model decides (it may call one rather than answer): never abstain for it.
        if not request.uses_tools and self._abstains(request):
            async for chunk in self._abstention(request):
                yield chunk
            return
        async with self.admission.slot():
            async for chunk in self._run(request, cancel or threading.Event()):
                yield chunk

    async def rewrite(self, messages: tuple[Turn, ...]) -> tuple[str, str]:
        """(query, method) for retrieval: the last question made standalone (rewriting.py)."""
        query, method = rewrite_with_terms(messages)
        if method == "none" or self._rewrite_method() != "llm":
            return (messages[-1].content, "none") if self._rewrite_method() == "off" else (query, method)
        condensed = await self._condense(messages)
        return (condensed, "llm") if condensed else (query, method)

    def _rewrite_method(self) -> str:
        chosen = self.settings.query_rewrite
        if chosen != "auto":
            return chosen
        return "llm" if self.backend.name in ("openai", "vllm") else "terms"

    async def _condense(self, messages: tuple[Turn, ...]) -> str:
        """The model's standalone version of the last question, or "" when it gives no usable one."""
        question = messages[-1].content
        language = detect_language(question)
        conversation = "\n".join(
            f"{turn.role}: {turn.content}" for turn in messages[:-1] if turn.role != "system"
        )
        text = self.builder.templates.render(
            "condense", language, conversation=conversation, question=question
        )
        turns = (Turn("user", text),)
        prompt = Prompt(
            kind="chat",
            language=language,
            messages=turns,
            question=question,
            passages=(),
            prompt_tokens=self.backend.count_prompt_tokens(turns),
            nothing_found_reply="",
            no_model_reply="",
        )
        sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=CONDENSE_MAX_TOKENS)
        job = GenerationJob(request_id=current_request_id(), prompt=prompt, sampling=sampling)
        parts: list[str] = []
        finish = ""
        async with self.admission.slot(), aclosing(self.backend.stream(job)) as chunks:
            async for chunk in chunks:
                parts.append(chunk.delta)
                if chunk.finish_reason:
                    finish = chunk.finish_reason
                    break
        condensed = " ".join("".join(parts).split())
        usable = condensed and len(condensed) <= CONDENSE_MAX_CHARS and finish != "length"
        return condensed if usable else ""

    def _abstains(self, request: GenerationRequest) -> bool:
        # A follow-up ("它分布在什么地区？") is asked about the earlier questions' subject.
        asked = " ".join((*earlier_subject(request), request.question))
        settings = self.settings
        return abstains(asked, request.passages, settings.abstain_below, settings.abstain_unless_similar)

    async def _abstention(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        reply = self.builder.templates.render("abstain_reply", detect_language(request.question))
        ABSTENTIONS.labels(self.backend.name).inc()
        yield Chunk(delta=reply, abstained=True)
        usage = Usage(prompt_tokens=0, completion_tokens=approx_token_count(reply))
        yield Chunk(finish_reason="stop", usage=usage)

    async def _run(self, request: GenerationRequest, cancel: threading.Event) -> AsyncGenerator[Chunk, None]:
        backend = self.backend
        started = time.perf_counter()
        prompt, sampling = await self._tokenizing(self.prepare, request)
        job = GenerationJob(request_id=current_request_id(), prompt=prompt, sampling=sampling, cancel=cancel)
        guard = RepetitionGuard()
        parts: list[str] = []
        final: Chunk | None = None
        accounted = False
        try:
            async with aclosing(backend.stream(job)) as chunks:
                ttft, itl = TTFT.labels(backend.name), ITL.labels(backend.name)
                last = started
                async for chunk in chunks:
                    if chunk.tool_calls:  # passed on as they come; they are not text to guard
                        yield Chunk(tool_calls=chunk.tool_calls)
                    passed = guard.feed(chunk.delta) if chunk.delta else ""
                    if passed:
                        now = time.perf_counter()
                        (itl if parts else ttft).observe(now - last)
                        last = now
                        parts.append(passed)
                        yield Chunk(delta=passed)
                    if guard.stopped:
                        REPETITIONS_CUT.labels(backend.name).inc()
                        final = Chunk(finish_reason="stop")
                        break
                    if chunk.finish_reason:
                        final = chunk
                        break
            if final is None and job.cancel.is_set():
                return  # the client left; nobody to tell
            rest = guard.flush()
            if rest:
                parts.append(rest)
                yield Chunk(delta=rest)
            usage = (final.usage if final else None) or Usage(
                prompt_tokens=prompt.prompt_tokens,
                completion_tokens=await self._tokenizing(backend.count_tokens, "".join(parts)),
            )
            self._account(usage)
            accounted = True
            check = check_answer("".join(parts), prompt.passages) if prompt.kind == "kb_chat" else None
            yield Chunk(finish_reason=final.finish_reason if final else "stop", usage=usage, check=check)
        finally:
            if not accounted:  # cancelled or failed midway: the work done still counts
                self._account(Usage(prompt.prompt_tokens, backend.count_tokens("".join(parts))))

    async def _tokenizing(self, work: Callable[[A], R], argument: A) -> R:
        """``work`` in a worker thread where the backend runs a real tokenizer (CPU work that
        would stall other streams), inline where it only estimates (cheaper than the hop)."""
        if self.backend.counts_with_tokenizer:
            return await asyncio.to_thread(work, argument)
        return work(argument)

    def _account(self, usage: Usage) -> None:
        TOKENS.labels(self.backend.name, "in").inc(usage.prompt_tokens)
        TOKENS.labels(self.backend.name, "out").inc(usage.completion_tokens)
