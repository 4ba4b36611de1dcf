"""The ``llamacpp`` backend: a GGUF model in process through llama-cpp-python (CPU).

One ``Llama`` object holds one KV cache and is not thread-safe, so generations take turns:
the service admits one at a time (``max_parallel = 1``), the others waiting in its bounded
queue, and an ``asyncio.Lock`` here still guarantees it whoever calls.
Decoding runs in a dedicated worker thread, so the event loop keeps serving health checks,
ListModels and other streams; tokens cross to the loop through an asyncio queue. The worker
checks ``job.cancel`` after every token, so a client that goes away frees the model at once.
The lock is released by the worker's completion callback, never earlier: a cancelled waiter
can never let two threads into the model.

Tool calling needs a chat format that has tools: ``LLAMACPP_CHAT_FORMAT`` set to one of
llama-cpp-python's tool-calling handlers (``TOOL_CHAT_FORMATS``); otherwise the backend reports
no tool support and requests with tools are refused before they reach it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from services.common.errors import FailedPrecondition, InvalidArgument
from services.generate.backends.base import Backend
from services.generate.config import GenerateSettings
from services.generate.domain import Chunk, GenerationJob, ModelInfo, Turn, Usage
from services.generate.tooling import CallPieces, ToolOptions, finish_reason_of

log = logging.getLogger("zhiku.generate.llamacpp")

# llama-cpp-python's chat handlers that take ``tools`` and answer with ``tool_calls``.
TOOL_CHAT_FORMATS = frozenset({"chatml-function-calling", "functionary", "functionary-v1", "functionary-v2"})

_END = object()


@dataclass
class StreamRecord:
    """How the last generation ended, for operators and for tests of cancellation."""

    outcome: str = ""  # "stop" | "length" | "cancelled" | "error"
    completion_tokens: int = 0


class LlamaCppBackend(Backend):
    name = "llamacpp"
    counts_with_tokenizer = True
    max_parallel = 1  # one KV cache: the service queues the rest, with its bounded wait
    response_formats = frozenset({"text", "json_object"})  # JSON by grammar
    tools_hint = (
        "set ZHIKU_GENERATE_LLAMACPP_CHAT_FORMAT to a tool-calling chat format "
        f"({', '.join(sorted(TOOL_CHAT_FORMATS))}) with a model trained for it"
    )

    def __init__(self, settings: GenerateSettings) -> None:
        if settings.model_path is None:  # the settings validator resolves the bundled file
            raise FailedPrecondition("llamacpp backend needs a model_path")
        self._path: Path = settings.model_path
        self._n_ctx = settings.n_ctx
        # llama-cpp-python defaults prompt evaluation to every core; with OpenMP barriers that
        # collapses on a shared 2-core host (measured: decode 78 -> 10 tok/s). Same count for both.
        self._n_threads = settings.n_threads or max(1, (os.cpu_count() or 2) // 2)
        self._model_id = settings.served_model_name or self._path.name.removesuffix(".gguf")
        self._repeat_penalty = settings.repeat_penalty
        self._chat_format = settings.llamacpp_chat_format or None
        self._llm: Any = None
        self._formatter: Any = None
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        self.last = StreamRecord()
        self.generations = 0

    async def start(self) -> None:
        self._llm, self._formatter = await asyncio.to_thread(self._load)
        log.info("loaded %s (n_ctx=%d)", self._path, self._n_ctx)

    def _load(self) -> tuple[Any, Any]:
        try:
            from llama_cpp import Llama, llama_chat_format
        except ImportError as error:
            raise FailedPrecondition(
                "backend llamacpp needs llama-cpp-python: run scripts/install-llama-cpp.sh"
            ) from error
        llm = Llama(
            model_path=str(self._path),
            n_ctx=self._n_ctx,
            n_threads=self._n_threads,
            n_threads_batch=self._n_threads,
            chat_format=self._chat_format,
            verbose=False,
        )
        # The same Jinja2 chat template create_chat_completion applies, so prompt token counts
        # (usage, window fitting) are exact, not estimates.
        formatter = None
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            eos, bos = llm.token_eos(), llm.token_bos()
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        return llm, formatter

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @property
    def can_call_tools(self) -> bool:
        return self._chat_format in TOOL_CHAT_FORMATS

    def models(self) -> list[ModelInfo]:
        window, tools = self._n_ctx, self.can_call_tools
        return [ModelInfo(id=self._model_id, backend=self.name, context_window=window, tools=tools)]

    @staticmethod
    def tool_kwargs(options: ToolOptions) -> dict[str, Any]:
        """``create_chat_completion`` arguments for tools and response_format. Its tool handlers
        offer tools only with an explicit ``tool_choice``, so OpenAI's default ("auto" when
        tools are given) is spelled out; "required" they cannot do."""
        kwargs = options.as_openai_kwargs()
        kwargs.pop("parallel_tool_calls", None)  # not a llama-cpp-python argument
        if options.tools:
            if options.tool_choice == "required":
                raise InvalidArgument(
                    "tool_choice 'required' is not supported by the llamacpp backend; name the function "
                    'instead ({"type": "function", "function": {"name": ...}}) or use "auto"'
                )
            kwargs.setdefault("tool_choice", "auto")
        return kwargs

    @property
    def context_window(self) -> int:
        return self._n_ctx

    @property
    def busy(self) -> bool:
        """True while a generation holds the model (including one still winding down)."""
        return self._lock.locked()

    def _model(self) -> Any:
        if self._llm is None:
            raise FailedPrecondition("the llama.cpp model is not loaded (service starting or stopped)")
        return self._llm

    def count_tokens(self, text: str) -> int:
        # Tokenizing reads only the vocabulary, safe alongside a decode in the worker thread.
        return len(self._model().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_prompt_tokens(self, messages: Sequence[Turn]) -> int:
        if self._formatter is None:
            return super().count_prompt_tokens(messages)
        # Text only: the GGUF's own template may not know tool fields (a tool call's content is None).
        rendered = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        tokens = self._model().tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return len(tokens)

    async def stream(self, job: GenerationJob) -> AsyncGenerator[Chunk, None]:
        llm = self._model()
        self.tool_kwargs(job.prompt.tools)  # refuse what the handler cannot do before queueing
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed while shutting down: nobody is listening
                job.cancel.set()

        await self._lock.acquire()
        try:
            work = loop.run_in_executor(self._executor, self._produce, llm, job, put)
        except BaseException:
            self._lock.release()
            raise
        work.add_done_callback(lambda _: self._lock.release())
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield cast(Chunk, item)
        finally:
            job.cancel.set()  # no-op after a normal end; stops the worker if the client left

    def _produce(self, llm: Any, job: GenerationJob, put: Callable[[object], None]) -> None:
        """Worker thread: run one streamed chat completion, forwarding chunks until done or cancelled."""
        self.generations += 1
        record = StreamRecord(outcome="error")
        parts: list[str] = []
        try:
            if job.cancel.is_set():  # the client left while this request waited for the model
                record.outcome = "cancelled"
                return
            sampling = job.sampling
            completion = llm.create_chat_completion(
                messages=job.prompt.message_dicts(),
                stream=True,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=list(sampling.stop),
                repeat_penalty=self._repeat_penalty,
                **self.tool_kwargs(job.prompt.tools),
            )
            finish = "stop"
            pieces = CallPieces()
            try:
                for event in completion:
                    if job.cancel.is_set():
                        record.outcome = "cancelled"
                        return
                    choice = event["choices"][0]
                    text = choice["delta"].get("content") or ""
                    if text:
                        parts.append(text)
                        put(Chunk(delta=text))
                    calls = pieces.read(choice["delta"].get("tool_calls"))
                    if calls:
                        parts.extend(call.arguments for call in calls)
                        put(Chunk(tool_calls=calls))
                    if choice.get("finish_reason"):
                        finish = finish_reason_of(choice["finish_reason"])
            finally:
                completion.close()
            completion_tokens = self._count_completion(llm, "".join(parts))
            record.outcome, record.completion_tokens = finish, completion_tokens
            self.last = record  # before the final chunk: a caller that saw the end sees the record
            usage = Usage(prompt_tokens=job.prompt.prompt_tokens, completion_tokens=completion_tokens)
            put(Chunk(finish_reason=finish, usage=usage))
        except Exception as error:
            log.exception("llama.cpp generation failed")
            put(error)
        finally:
            if record.outcome == "cancelled":
                record.completion_tokens = self._count_completion(llm, "".join(parts))
            self.last = record
            put(_END)

    @staticmethod
    def _count_completion(llm: Any, text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0
