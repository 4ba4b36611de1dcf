"""How one reply of ``/v1/chat/completions`` is judged, and how judged replies add up.

The response fields the grounded-answer work adds (``abstained``, ``unsupported``, each
citation's ``index`` and ``cited``) are used when present. When a field is absent the figure
that needs it is ``None`` (printed ``n/a``), except which passages a reply cites: without
``cited`` that is read from its ``[n]`` markers.

The judgement is the bench's own (its sentence split, its normalisation), not the service's,
so a change to the service's checks cannot move the ruler it is measured with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.answer_sets import Question, contains_answer, normalize
from services.generate.text import detect_language

_MARKER = re.compile(r"\[(\d+(?:\s*[,，]\s*\d+)*)\]")
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+|\n+")
_NOISE = re.compile(r"[\W_]+")
# Shorter pieces ("1.", "是的。") may honestly recur; they are not what a looping model repeats.
MIN_SENTENCE_CHARS = 6


def marker_numbers(reply: str) -> set[int]:
    """The passage numbers a reply cites with ``[n]`` (also ``[1, 2]``)."""
    return {int(n) for group in _MARKER.findall(reply) for n in re.split(r"[,，]", group)}


def sentences(reply: str) -> list[str]:
    """The reply's sentences, each normalised with its citation markers and punctuation
    removed; pieces shorter than ``MIN_SENTENCE_CHARS`` are left out."""
    keys = (_NOISE.sub("", normalize(_MARKER.sub("", piece))) for piece in _SENTENCE_END.split(reply))
    return [key for key in keys if len(key) >= MIN_SENTENCE_CHARS]


def repeats_a_sentence(reply: str) -> bool:
    keys = sentences(reply)
    return len(keys) != len(set(keys))


@dataclass
class Judged:
    """One question, its reply and what the bench makes of it (None: cannot be told)."""

    question_id: str
    question: str
    reply: str
    latency_s: float
    error: str | None = None
    retrieval_query: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)  # without their text
    answer_in_reply: bool | None = None
    gold_retrieved: bool | None = None
    gold_cited: bool | None = None
    cited_gold_holds_answer: bool | None = None
    cites_any: bool = False
    abstained: bool | None = None
    question_language: bool = False
    repeated_sentence: bool = False
    unsupported: int | None = None  # sentences the service found no passage for
    check_agrees: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge(question: Question, response: dict[str, Any], latency_s: float) -> Judged:
    """Judge a successful response to ``question`` (``answers`` empty: nothing to find)."""
    reply = (response.get("choices") or [{}])[0].get("message", {}).get("content") or ""
    citations = list(response.get("citations") or [])
    has_cited_field = any("cited" in c for c in citations)
    markers = marker_numbers(reply)
    is_cited = [
        bool(c.get("cited")) if has_cited_field else c.get("index", n) in markers
        for n, c in enumerate(citations, start=1)
    ]
    cited = [c for c, flag in zip(citations, is_cited, strict=True) if flag]
    gold = question.gold_file
    answers = question.answers
    judged = Judged(
        question_id=question.id,
        question=question.text,
        reply=reply,
        latency_s=latency_s,
        retrieval_query=response.get("retrieval_query"),
        citations=[
            {
                "index": c.get("index", n),
                "file_name": c.get("file_name"),
                "score": c.get("score"),
                "cited": flag,
                "supported": c.get("supported"),
                "holds_answer": bool(answers) and contains_answer(c.get("text") or "", answers),
                "text": c.get("text"),  # kept, so dev runs can be re-scored offline
            }
            for n, (c, flag) in enumerate(zip(citations, is_cited, strict=True), start=1)
        ],
        cites_any=bool(cited),
        abstained=response.get("abstained"),
        question_language=detect_language(reply) == detect_language(question.text),
        repeated_sentence=repeats_a_sentence(reply),
    )
    if answers:
        judged.answer_in_reply = contains_answer(reply, answers)
    if gold is not None:
        judged.gold_retrieved = any(c.get("file_name") == gold for c in citations)
        judged.gold_cited = any(c.get("file_name") == gold for c in cited)
        if answers:
            judged.cited_gold_holds_answer = any(
                c.get("file_name") == gold and contains_answer(c.get("text") or "", answers) for c in cited
            )
    if isinstance(response.get("unsupported"), list):
        judged.unsupported = len(response["unsupported"])
        # The check (no unsupported sentence) against the truth (the reply cites the passage that
        # holds the answer); abstentions are left out: the check does not run on them.
        if judged.cited_gold_holds_answer is not None and not judged.abstained:
            judged.check_agrees = (judged.unsupported == 0) == judged.cited_gold_holds_answer
    return judged


def failed(question: Question, error: str, latency_s: float) -> Judged:
    return Judged(question.id, question.text, "", latency_s, error=error)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rate(judged: Sequence[Judged], pick: Callable[[Judged], bool | None]) -> float | None:
    """Share of True among the replies where ``pick`` can tell; None when it never can."""
    values = [v for v in (pick(j) for j in judged if j.error is None) if v is not None]
    return sum(values) / len(values) if values else None


def summary(judged: Sequence[Judged]) -> dict[str, float | int | None]:
    """Every figure of a set of replies; rates over the replies that came back."""
    ok = [j for j in judged if j.error is None]
    latencies = [j.latency_s for j in ok]
    return {
        "n": len(judged),
        "errors": len(judged) - len(ok),
        "answer_in_reply": rate(judged, lambda j: j.answer_in_reply),
        "cited_gold_holds_answer": rate(judged, lambda j: j.cited_gold_holds_answer),
        "gold_cited": rate(judged, lambda j: j.gold_cited),
        "gold_retrieved": rate(judged, lambda j: j.gold_retrieved),
        "cites_any": rate(judged, lambda j: j.cites_any),
        "abstained": rate(judged, lambda j: j.abstained),
        "question_language": rate(judged, lambda j: j.question_language),
        "repeated_sentence": rate(judged, lambda j: j.repeated_sentence),
        "with_unsupported": rate(judged, lambda j: None if j.unsupported is None else j.unsupported > 0),
        "check_agrees": rate(judged, lambda j: j.check_agrees),
        "mean_chars": sum(len(j.reply) for j in ok) / len(ok) if ok else None,
        "p50_s": percentile(latencies, 0.5) if latencies else None,
        "p99_s": percentile(latencies, 0.99) if latencies else None,
    }
