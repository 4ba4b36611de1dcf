"""Domain types of the generate service and their protobuf conversions.

The servicer converts a ``GenerateRequest`` once, here, with every check a caller can get
wrong; backends and prompt building then work on plain validated dataclasses and never see
protobuf messages.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.common.errors import InvalidArgument
from zhiku.v1 import common_pb2, generate_pb2

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
FINISH_REASONS = ("stop", "length", "cancelled")
MAX_STOP_SEQUENCES = 16


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        """The OpenAI / llama.cpp / Hugging Face chat-template message shape."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class PassageRef:
    """A retrieved passage; ``number`` is its 1-based citation number ([1], [2], ...)."""

    number: int
    file_name: str
    text: str
    score: float
    dense_score: float = 0.0  # the question's closeness in meaning, absolute (0: not known)

    @classmethod
    def from_pb(cls, number: int, passage: common_pb2.Passage) -> PassageRef:
        return cls(
            number=number,
            file_name=passage.file_name,
            text=passage.text,
            score=passage.score,
            dense_score=passage.dense_score,
        )


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Turn, ...]
    passages: tuple[PassageRef, ...]
    grounded: bool
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: tuple[str, ...]
    model: str

    @property
    def question(self) -> str:
        return self.messages[-1].content

    @property
    def history(self) -> tuple[Turn, ...]:
        return self.messages[:-1]

    @staticmethod
    def turns_from_pb(messages: Sequence[generate_pb2.ChatMessage]) -> tuple[Turn, ...]:
        """The conversation, checked: known roles, ending with a non-empty user question."""
        if not messages:
            raise InvalidArgument("messages is empty: send at least the user's question as a 'user' message")
        turns: list[Turn] = []
        for index, message in enumerate(messages):
            if message.role not in ROLES:
                raise InvalidArgument(
                    f"messages[{index}].role is {message.role!r}; expected one of system, user, assistant"
                )
            turns.append(Turn(role=message.role, content=message.content))  # type: ignore[arg-type]
        last = turns[-1]
        if last.role != "user":
            raise InvalidArgument(
                f"the last message must be the user's question (role 'user'), got role {last.role!r}"
            )
        if not last.content.strip():
            raise InvalidArgument("the user's question (the last message) is empty")
        return tuple(turns)

    @classmethod
    def from_pb(cls, request: generate_pb2.GenerateRequest) -> GenerationRequest:
        """Validate and convert; every rejection names the field and what was expected."""
        turns = cls.turns_from_pb(request.messages)
        temperature = request.temperature if request.HasField("temperature") else None
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise InvalidArgument(f"temperature must be within [0, 2], got {temperature:g}")
        top_p = request.top_p if request.HasField("top_p") else None
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise InvalidArgument(f"top_p must be within (0, 1], got {top_p:g}")
        max_tokens = request.max_tokens if request.HasField("max_tokens") else None
        if max_tokens is not None and max_tokens < 1:
            raise InvalidArgument(f"max_tokens must be at least 1, got {max_tokens}")
        if len(request.stop) > MAX_STOP_SEQUENCES:
            raise InvalidArgument(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(request.stop)}")
        if any(not s for s in request.stop):
            raise InvalidArgument("stop sequences must not be empty strings")
        passages = tuple(
            PassageRef.from_pb(number, p)
            for number, p in enumerate(request.passages, start=1)
            if p.text.strip()
        )
        return cls(
            messages=turns,
            passages=passages,
            grounded=request.grounded,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=tuple(request.stop),
            model=request.model,
        )


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def to_pb(self) -> generate_pb2.Usage:
        return generate_pb2.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


@dataclass(frozen=True)
class Chunk:
    """One streamed piece: a text delta, or the final piece with finish_reason (and usage).

    Grounded answers add ``abstained`` (on the first piece: the passages cannot answer, the
    text says so) and ``check`` (on the final piece: how the passages back each sentence)."""

    delta: str = ""
    finish_reason: str = ""
    usage: Usage | None = None
    abstained: bool = False
    check: AnswerCheck | None = None

    def to_pb(self) -> generate_pb2.GenerateResponse:
        response = generate_pb2.GenerateResponse(
            delta=self.delta, finish_reason=self.finish_reason, abstained=self.abstained
        )
        if self.usage is not None:
            response.usage.CopyFrom(self.usage.to_pb())
        if self.check is not None:
            response.grounding.CopyFrom(self.check.to_pb())
        return response


@dataclass(frozen=True)
class PassageCheck:
    number: int
    cited: bool
    supported: bool


@dataclass(frozen=True)
class Unsupported:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class AnswerCheck:
    """Each passage: cited by the answer, and backing a sentence; sentences nothing backs."""

    passages: tuple[PassageCheck, ...]
    unsupported: tuple[Unsupported, ...]

    def to_pb(self) -> generate_pb2.Grounding:
        return generate_pb2.Grounding(
            passages=[
                generate_pb2.PassageSupport(number=p.number, cited=p.cited, supported=p.supported)
                for p in self.passages
            ],
            unsupported=[
                generate_pb2.UnsupportedSentence(text=u.text, start=u.start, end=u.end)
                for u in self.unsupported
            ],
        )


@dataclass(frozen=True)
class ModelInfo:
    id: str
    backend: str
    context_window: int
    tools: bool = False  # the model can be given tools (tool calling passes through)

    def to_pb(self) -> generate_pb2.ModelCard:
        return generate_pb2.ModelCard(
            id=self.id, backend=self.backend, context_window=self.context_window, tools=self.tools
        )


PromptKind = Literal["kb_chat", "chat", "nothing_found"]
Language = Literal["zh", "en"]


@dataclass(frozen=True)
class Prompt:
    """The chat messages a model sees, plus what non-LLM backends answer from."""

    kind: PromptKind
    language: Language
    messages: tuple[Turn, ...]
    question: str
    passages: tuple[PassageRef, ...]  # those that fitted the window, maybe the last one trimmed
    prompt_tokens: int
    # Ready-made replies in the question's language, for backends without a model.
    nothing_found_reply: str
    no_model_reply: str
    abstain_reply: str = ""
    # A follow-up's subject, carried from the earlier questions (rewriting.py): what "它" means.
    earlier_subject: tuple[str, ...] = ()

    def message_dicts(self) -> list[dict[str, str]]:
        return [turn.as_dict() for turn in self.messages]


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...] = ()


@dataclass
class GenerationJob:
    """One generation handed to a backend.

    ``cancel`` is a thread-safe flag: the gRPC layer sets it when the client goes away, so a
    backend producing in a worker thread (llama.cpp) stops at the next token.
    """

    request_id: str
    prompt: Prompt
    sampling: Sampling
    cancel: threading.Event = field(default_factory=threading.Event)
