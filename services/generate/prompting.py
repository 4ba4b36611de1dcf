"""Prompt templates and the builder that fits a conversation into a model's context window.

Three prompts exist, each in Chinese and English (picked by the question's language):
knowledge-base chat (numbered passages, answer from them and cite [n]), plain chat, and
"nothing found" (knowledge-base chat where retrieval returned nothing); a fourth, ``condense``,
turns a follow-up into a standalone question for retrieval (``rewriting.py``). A request with
tools is the exception: its conversation goes to the model as sent (``build_tool_chat``). Templates are files,
so operators tune wording without a release; they are validated once at start-up.

Fitting priority when the window is tight: the question first, then passages in retrieval
order (the last one that only partly fits is cut by tokens), then the most recent history
(at most ``history_turns`` exchanges). Every count is in the backend's own tokens (llama.cpp's
tokenizer for GGUF, the Hugging Face tokenizer with its chat template for vLLM, a documented
estimate for OpenAI-compatible upstreams whose tokenizer is not at hand), never characters.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from string import Template
from typing import Protocol

from services.common.errors import InvalidArgument
from services.generate.domain import (
    GenerationRequest,
    Language,
    PassageRef,
    Prompt,
    PromptKind,
    Turn,
)
from services.generate.rewriting import carried_terms, stands_alone
from services.generate.text import detect_language

LANGUAGES: tuple[Language, ...] = ("zh", "en")

# name -> (required placeholders, allowed placeholders)
TEMPLATE_FIELDS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    "system": (frozenset(), frozenset()),
    "kb_chat": (frozenset({"context", "question"}), frozenset({"context", "question"})),
    "passage": (frozenset({"index", "text"}), frozenset({"index", "file_name", "text"})),
    "kb_system": (frozenset({"context"}), frozenset({"context"})),
    "chat": (frozenset({"question"}), frozenset({"question"})),
    "nothing_found": (frozenset({"question"}), frozenset({"question"})),
    "nothing_found_reply": (frozenset(), frozenset()),
    "no_model_reply": (frozenset(), frozenset()),
    "abstain_reply": (frozenset(), frozenset()),
    "condense": (frozenset({"conversation", "question"}), frozenset({"conversation", "question"})),
}

# Upper bound of what a chat template adds per message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 8
# Tokens between two passages in the context ("\n\n").
PASSAGE_SEPARATOR_TOKENS = 2
# A passage cut shorter than this is noise; stop adding passages instead.
MIN_PASSAGE_TOKENS = 32
ELLIPSIS = "…"


class TokenCounter(Protocol):
    """What the builder needs from a backend: its own tokenizer's counts."""

    def count_tokens(self, text: str) -> int: ...

    def count_prompt_tokens(self, messages: Sequence[Turn]) -> int: ...


class PromptTemplates:
    """The template set, bundled files overlaid by an optional override folder."""

    def __init__(self, templates: Mapping[tuple[str, Language], Template]) -> None:
        self._templates = dict(templates)

    @classmethod
    def load(cls, override_dir: Path | None = None) -> PromptTemplates:
        bundled = importlib.resources.files("services.generate.prompts")
        templates: dict[tuple[str, Language], Template] = {}
        for name, (required, allowed) in TEMPLATE_FIELDS.items():
            for language in LANGUAGES:
                file_name = f"{name}.{language}.txt"
                override = override_dir / file_name if override_dir is not None else None
                if override is not None and override.is_file():
                    source, text = str(override), override.read_text(encoding="utf-8")
                else:
                    resource = bundled.joinpath(file_name)
                    source, text = f"bundled {file_name}", resource.read_text(encoding="utf-8")
                templates[(name, language)] = _checked(source, text.rstrip("\n"), required, allowed)
        return cls(templates)

    def render(self, name: str, language: Language, **values: object) -> str:
        return self._templates[(name, language)].substitute(values)


def _checked(source: str, text: str, required: frozenset[str], allowed: frozenset[str]) -> Template:
    template = Template(text)
    if not template.is_valid():
        raise ValueError(f"prompt template {source}: invalid '$' placeholder (write $$ for a literal $)")
    names = set(template.get_identifiers())
    if missing := required - names:
        raise ValueError(f"prompt template {source}: missing placeholder(s) {_names(missing)}")
    if unknown := names - allowed:
        allowed_text = _names(allowed) if allowed else "none"
        raise ValueError(
            f"prompt template {source}: unknown placeholder(s) {_names(unknown)}; allowed: {allowed_text}"
        )
    return template


def _names(names: set[str] | frozenset[str]) -> str:
    return ", ".join(f"${n}" for n in sorted(names))


def earlier_subject(request: GenerationRequest) -> tuple[str, ...]:
    """The subject a follow-up question points back at (none when it names its own)."""
    earlier = [t.content for t in reversed(request.history) if t.role == "user" and t.content.strip()]
    if not earlier or stands_alone(request.question):
        return ()
    return tuple(carried_terms(request.question, earlier))


def truncate_to_tokens(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """Longest prefix of ``text`` within ``max_tokens`` (binary search: O(log n) counts)."""
    if max_tokens <= 0:
        return ""
    if counter.count_tokens(text) <= max_tokens:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if counter.count_tokens(text[:middle]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]


class PromptBuilder:
    """Builds prompts; ``history_turns`` caps the earlier exchanges kept (None: no cap).

    A turn is one user message and the assistant's reply, so the cap keeps the last
    ``2 * history_turns`` dialogue messages; the token budget may then drop more.
    """

    def __init__(self, templates: PromptTemplates, history_turns: int | None = None) -> None:
        self.templates = templates
        self.history_turns = history_turns

    def kind_of(self, request: GenerationRequest) -> PromptKind:
        if request.passages:
            return "kb_chat"
        return "nothing_found" if request.grounded else "chat"

    def build(self, request: GenerationRequest, counter: TokenCounter, window: int, reserve: int) -> Prompt:
        """Messages for ``request`` that leave ``reserve`` tokens of ``window`` for the answer."""
        language = detect_language(request.question)
        kind = self.kind_of(request)
        budget = window - reserve

        def cost(turn: Turn) -> int:
            return counter.count_tokens(turn.content) + MESSAGE_OVERHEAD_TOKENS

        client_system = [t for t in request.history if t.role == "system"]
        dialogue = [t for t in request.history if t.role != "system"]
        if self.history_turns is not None:
            dialogue = (
                dialogue[max(0, len(dialogue) - 2 * self.history_turns) :] if self.history_turns else []
            )
        system = client_system or [Turn("system", self.templates.render("system", language))]

        final_empty = self._final_turn(kind, language, request.question, context="")
        fixed = sum(cost(t) for t in system) + cost(final_empty)
        if fixed > budget:
            raise InvalidArgument(
                f"the question is too long for the model: the prompt needs {fixed} tokens before any "
                f"passage or history, but only {budget} fit (context window {window} minus {reserve} "
                "reserved for the answer); shorten the question or lower max_tokens"
            )
        remaining = budget - fixed

        used: list[PassageRef] = []
        if kind == "kb_chat":
            used, remaining = self._fit_passages(request.passages, language, counter, remaining)
            if not used:
                raise InvalidArgument(
                    f"the question leaves no room for passages in the model's context window ({window} "
                    f"tokens, {reserve} reserved for the answer); shorten the question or lower max_tokens"
                )
        context = "\n\n".join(self._passage_block(p, language) for p in used)
        final = self._final_turn(kind, language, request.question, context=context)

        history: list[Turn] = []
        for turn in reversed(dialogue):
            turn_cost = cost(turn)
            if turn_cost > remaining:
                break
            history.insert(0, turn)
            remaining -= turn_cost
        # Chat templates that expect user/assistant alternation need the history to open on a user turn.
        while history and history[0].role != "user":
            history.pop(0)

        messages = [*system, *history, final]
        prompt_tokens = counter.count_prompt_tokens(messages)
        # The per-message overhead is an estimate; if the exact count overshoots, shed history.
        while prompt_tokens > budget and history:
            history.pop(0)
            while history and history[0].role != "user":
                history.pop(0)
            messages = [*system, *history, final]
            prompt_tokens = counter.count_prompt_tokens(messages)
        if prompt_tokens >= window:
            raise InvalidArgument(
                f"the prompt needs {prompt_tokens} tokens but the model's context window is {window}"
            )
        return Prompt(
            kind=kind,
            language=language,
            messages=tuple(messages),
            question=request.question,
            passages=tuple(used),
            prompt_tokens=prompt_tokens,
            nothing_found_reply=self.templates.render("nothing_found_reply", language),
            no_model_reply=self.templates.render("no_model_reply", language),
            abstain_reply=self.templates.render("abstain_reply", language),
            earlier_subject=earlier_subject(request) if kind == "kb_chat" else (),
            tools=request.tools,  # response_format alone keeps the usual prompt
        )

    def build_tool_chat(
        self, request: GenerationRequest, counter: TokenCounter, window: int, reserve: int
    ) -> Prompt:
        """A request with tools or tool turns: the conversation goes to the model as sent (no
        question template, nothing dropped: a tool result must follow the call it answers),
        the tools with it. With a knowledge base, passages that fit are appended to the system
        message (``kb_system``), so the model may answer from them or call a tool."""
        language = detect_language(request.question)
        system_text = "\n\n".join(t.content for t in request.messages if t.role == "system") or (
            self.templates.render("system", language)
        )
        dialogue = [t for t in request.messages if t.role != "system"]

        def cost(turn: Turn) -> int:
            calls = "".join(c.name + c.arguments for c in turn.tool_calls)
            return counter.count_tokens(turn.content + calls) + MESSAGE_OVERHEAD_TOKENS

        tools_cost = counter.count_tokens(json.dumps(request.tools.tools, ensure_ascii=False))
        budget = window - reserve
        fixed = cost(Turn("system", system_text)) + sum(cost(t) for t in dialogue) + tools_cost
        if fixed > budget:
            raise InvalidArgument(
                f"the conversation and its tools need about {fixed} tokens, but only {budget} fit (context "
                f"window {window} minus {reserve} reserved for the answer); send fewer or shorter messages"
            )
        used: list[PassageRef] = []
        if request.passages:
            frame = counter.count_tokens(self.templates.render("kb_system", language, context=""))
            used, _ = self._fit_passages(request.passages, language, counter, budget - fixed - frame)
        if used:
            context = "\n\n".join(self._passage_block(p, language) for p in used)
            system_text += "\n\n" + self.templates.render("kb_system", language, context=context)
        messages = (Turn("system", system_text), *dialogue)
        return Prompt(
            kind="kb_chat" if used else "chat",
            language=language,
            messages=messages,
            question=request.question,
            passages=tuple(used),
            prompt_tokens=counter.count_prompt_tokens(messages) + tools_cost,
            nothing_found_reply=self.templates.render("nothing_found_reply", language),
            no_model_reply=self.templates.render("no_model_reply", language),
            abstain_reply=self.templates.render("abstain_reply", language),
            tools=request.tools,
        )

    def _final_turn(self, kind: PromptKind, language: Language, question: str, context: str) -> Turn:
        if kind == "kb_chat":
            text = self.templates.render("kb_chat", language, context=context, question=question)
        else:
            text = self.templates.render(kind, language, question=question)
        return Turn("user", text)

    def _passage_block(self, passage: PassageRef, language: Language) -> str:
        return self.templates.render(
            "passage",
            language,
            index=passage.number,
            file_name=passage.file_name or "-",
            text=passage.text,
        )

    def _fit_passages(
        self,
        passages: Sequence[PassageRef],
        language: Language,
        counter: TokenCounter,
        remaining: int,
    ) -> tuple[list[PassageRef], int]:
        used: list[PassageRef] = []
        for passage in passages:
            block_cost = counter.count_tokens(self._passage_block(passage, language))
            block_cost += PASSAGE_SEPARATOR_TOKENS
            if block_cost <= remaining:
                used.append(passage)
                remaining -= block_cost
                continue
            frame = counter.count_tokens(self._passage_block(replace(passage, text=ELLIPSIS), language))
            room = remaining - frame - PASSAGE_SEPARATOR_TOKENS
            if room >= MIN_PASSAGE_TOKENS:
                cut = truncate_to_tokens(passage.text, room, counter).rstrip() + ELLIPSIS
                used.append(replace(passage, text=cut))
                remaining -= counter.count_tokens(self._passage_block(used[-1], language))
                remaining -= PASSAGE_SEPARATOR_TOKENS
            break
        return used, max(remaining, 0)
