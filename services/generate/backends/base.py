"""The small interface every generation backend implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence

from services.generate.domain import Chunk, GenerationJob, ModelInfo, Turn
from services.generate.prompting import MESSAGE_OVERHEAD_TOKENS
from services.generate.text import approx_token_count


class Backend(abc.ABC):
    """Streams an answer for a built prompt.

    ``stream`` yields text deltas (and, for a request with tools, ``tool_calls`` pieces), then
    exactly one chunk with ``finish_reason`` ("stop", "length" or "tool_calls") and, when the
    backend knows them, exact token counts in ``usage`` (the service fills in estimates
    otherwise). Closing the iterator early, or setting ``job.cancel``, must stop production:
    a cancelled gRPC stream should not keep a GPU or CPU busy.
    """

    name: str
    # True where count_tokens runs the model's tokenizer: building a prompt is then CPU work
    # worth a worker thread. The character estimate (the default) takes microseconds, less
    # than the hop to a thread, so such prompts are built on the event loop.
    counts_with_tokenizer: bool = False
    # Generations the backend runs at once, when it has a limit of its own (0: none). The
    # service admits no more than this, so calls queue where their wait is bounded and seen.
    max_parallel: int = 0
    # OpenAI ``response_format`` types the backend honours ("text" is plain generation).
    response_formats: frozenset[str] = frozenset({"text"})
    # How to give this backend tools, named in the refusal of a request with tools.
    tools_hint: str = "this backend cannot call tools"

    @property
    def can_call_tools(self) -> bool:
        """Tools, tool_choice and tool turns reach the model (ModelCard.tools)."""
        return False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load models, open clients; runs before the service reports SERVING."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``start`` acquired."""

    @abc.abstractmethod
    def models(self) -> list[ModelInfo]: ...

    @property
    @abc.abstractmethod
    def context_window(self) -> int: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's tokenizer; an estimate where none is at hand."""
        return approx_token_count(text)

    def count_prompt_tokens(self, messages: Sequence[Turn]) -> int:
        """Tokens of the whole chat prompt, chat template included."""
        return sum(self.count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    @abc.abstractmethod
    def stream(self, job: GenerationJob) -> AsyncGenerator[Chunk, None]: ...
