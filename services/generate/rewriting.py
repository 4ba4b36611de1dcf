"""A follow-up question turned into one that can be searched on its own.

"它是哪一年成立的？" after a question about a company searches for nothing useful: retrieval sees
only the words of the last message. Two ways to fix the query before searching:

- ``terms`` (no model needed, the default on the extractive and llama.cpp backends): the rarest
  terms of the earlier user questions that the new one lacks are put in front of it, unless the
  new question names its own subject (a rare name, and no pronoun pointing back). Retrieval then
  finds the earlier subject's passages, and the new question's words pick among them.
- ``llm``: the model condenses the conversation into a standalone question (the ``condense``
  prompt, zh and en). The service falls back to ``terms`` when the model's output is empty or
  too long to be a question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.generate.domain import Turn
from services.generate.lexical import normalized
from services.generate.terms import salient_terms

# Words pointing back at something said before.
_POINTING_BACK = re.compile(
    r"它|他|她|其|该|此|这|那|\b(it|its|they|them|their|he|him|his|she|her|this|that|these|those)\b"
)
# A term this rare (weight = log(total / frequency) in jieba's dictionary) is a name the
# question states itself, so it is not a follow-up (unless it also points back).
OWN_SUBJECT_WEIGHT = 16.0
CARRIED_TERMS = 3
# Earlier user questions searched for terms, most recent first.
LOOK_BACK = 2


def stands_alone(question: str) -> bool:
    """True when the question names its own subject and points back at nothing."""
    if _POINTING_BACK.search(normalized(question)):
        return False
    return any(
        weight >= OWN_SUBJECT_WEIGHT and len(term) > 1 and not term.isdigit()
        for term, weight in salient_terms(question, guess_names=True).items()
    )


def carried_terms(question: str, earlier: Sequence[str]) -> list[str]:
    """The rarest terms of the earlier questions (most recent first) that ``question`` lacks."""
    present = normalized(question)
    weights: dict[str, float] = {}
    for text in earlier[:LOOK_BACK]:
        for term, weight in salient_terms(text, guess_names=True).items():
            if term not in present and not term.isdigit():
                weights.setdefault(term, weight)
    return sorted(weights, key=lambda term: -weights[term])[:CARRIED_TERMS]


def rewrite_with_terms(messages: Sequence[Turn]) -> tuple[str, str]:
    """(query, method): the question with the earlier subject's terms, or itself ("none")."""
    question = messages[-1].content
    earlier = [
        turn.content for turn in reversed(messages[:-1]) if turn.role == "user" and turn.content.strip()
    ]
    if not earlier or stands_alone(question):
        return question, "none"
    carried = carried_terms(question, earlier)
    if not carried:
        return question, "none"
    return f"{' '.join(carried)} {question}", "terms"
