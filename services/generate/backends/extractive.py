"""The ``extractive`` backend: answers with the passages' best sentences, no model at all.

It keeps knowledge-base chat useful where no LLM can run (tiny pods, CI, air-gapped demos),
gives tests a deterministic backend, and on the measured sets it is the answer the bundled
models cannot beat (docs/answers.md). A sentence's score is the share of the question it covers:
the question's character bigrams (and, weighted less, its Chinese characters), each weighted by
how rare it is among the candidate sentences, so the passage's subject, which every sentence
repeats, counts for little and the words that tell sentences apart count most; terms found in
the neighbouring sentences count a little (questions often paraphrase two adjacent sentences),
a sentence with numbers gains when the question asks for a number or a date, and the better
ranked passage wins ties. Sentences are quoted best first, within a character budget, each with
its citation; a sentence that overlapping chunks repeat is quoted once.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from services.generate.backends.base import Backend
from services.generate.config import GenerateSettings
from services.generate.domain import Chunk, GenerationJob, ModelInfo, PassageRef
from services.generate.lexical import HAN_CLASS, char_unigrams, features, normalized, split_sentences
from services.generate.terms import presence
from services.generate.text import approx_token_count

MODEL_ID = "extractive"
# Nominal: no model window, passages are never trimmed for this backend.
CONTEXT_WINDOW = 1 << 20
# The ranking's weights and the answer's size, chosen on the dev split of CMRC and SQuAD (see
# docs/answers.md; the reported figures come from the other half).
UNIGRAM_WEIGHT = 0.3
NEIGHBOUR_WEIGHT = 0.3
NUMBER_BONUS = 0.2
PASSAGE_PRIOR = 0.05
# A follow-up ("它在哪年成立？"): passages holding the earlier questions' subject gain this much.
SUBJECT_WEIGHT = 0.3
# Further sentences must score at least this share of the best one to be quoted.
RELATIVE_CUTOFF = 0.3
# Characters quoted at most (the best sentence always is): a Chinese sentence says in about 45
# characters what an English one says in 100.
BUDGET_CHARS = {"zh": 250, "en": 550}

_NUMBER_QUESTION = re.compile(
    r"多少|几|哪一年|哪年|何时|什么时候|年份|时间|日期"
    r"|how many|how much|what year|when|how long|how old|percent"
)
_DIGIT = re.compile(r"\d")
# Stream pieces: up to four Chinese characters, or a word with its trailing spaces.
_PIECE = re.compile(f"[{HAN_CLASS}]{{1,4}}|[^\\s{HAN_CLASS}]+\\s*|\\s+")


@dataclass(frozen=True)
class ScoredSentence:
    score: float
    passage: PassageRef
    position: int
    text: str


def _terms(text: str) -> set[str]:
    return features(text) | char_unigrams(text)


def rank_sentences(
    question: str, passages: Sequence[PassageRef], subject: Sequence[str] = ()
) -> list[ScoredSentence]:
    """Every distinct sentence of the passages, best first (see the module docstring). A
    follow-up's ``subject`` (carried from earlier questions) favours the passages about it."""
    sentences = [
        (passage, position, text)
        for passage in passages
        for position, text in enumerate(split_sentences(passage.text))
    ]
    terms = {(p.number, i): _terms(text) for p, i, text in sentences}
    counts: dict[str, int] = {}
    for found in terms.values():
        for term in found:
            counts[term] = counts.get(term, 0) + 1
    wanted = _terms(question)
    n = len(sentences) or 1
    weight = {
        term: math.log(1 + n / counts.get(term, 0.5))
        * (UNIGRAM_WEIGHT if len(term) == 1 and term.isalpha() and not term.isascii() else 1.0)
        for term in wanted
    }
    total = sum(weight.values()) or 1.0
    asks_number = bool(_NUMBER_QUESTION.search(normalized(question)))
    about = {p.number: _share_present(subject, p.text) for p in passages} if subject else {}
    scored = []
    for passage, position, text in sentences:
        own = wanted & terms[(passage.number, position)]
        score = sum(weight[t] for t in own) / total
        around = set().union(*(terms.get((passage.number, j), set()) for j in (position - 1, position + 1)))
        score += NEIGHBOUR_WEIGHT * sum(weight[t] for t in (wanted & around) - own) / total
        if asks_number and _DIGIT.search(text):
            score += NUMBER_BONUS
        score += SUBJECT_WEIGHT * about.get(passage.number, 0.0)
        scored.append(ScoredSentence(score + PASSAGE_PRIOR / passage.number, passage, position, text))
    scored.sort(key=lambda s: (-s.score, s.passage.number, s.position))
    return scored


def _share_present(terms: Sequence[str], text: str) -> float:
    body = normalized(text)
    return sum(presence(term, body) for term in terms) / len(terms)


def compose_answer(
    question: str, passages: Sequence[PassageRef], language: str, subject: Sequence[str] = ()
) -> str:
    """The best sentences within the budget, best first, each followed by its citation."""
    ranked = rank_sentences(question, passages, subject)
    if not ranked:
        return ""
    budget = BUDGET_CHARS.get(language, BUDGET_CHARS["en"])
    best = ranked[0].score
    chosen: list[ScoredSentence] = []
    quoted: list[str] = []
    used = 0
    for sentence in ranked:
        if sentence.score < best * RELATIVE_CUTOFF:
            break
        key = normalized(sentence.text)
        if any(key in earlier or earlier in key for earlier in quoted):
            continue  # overlapping chunks hold the same sentence (or a cut-off piece of it)
        if chosen and used + len(sentence.text) > budget:
            continue
        chosen.append(sentence)
        quoted.append(key)
        used += len(sentence.text)
    separator = "" if language == "zh" else " "
    return separator.join(f"{s.text} [{s.passage.number}]" for s in chosen)


def pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


class ExtractiveBackend(Backend):
    name = "extractive"

    def __init__(self, settings: GenerateSettings) -> None:
        self._model_id = settings.served_model_name or MODEL_ID

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=self._model_id, backend=self.name, context_window=CONTEXT_WINDOW)]

    @property
    def context_window(self) -> int:
        return CONTEXT_WINDOW

    async def stream(self, job: GenerationJob) -> AsyncGenerator[Chunk, None]:
        prompt = job.prompt
        if prompt.kind == "kb_chat":
            answer = compose_answer(prompt.question, prompt.passages, prompt.language, prompt.earlier_subject)
        elif prompt.kind == "nothing_found":
            answer = prompt.nothing_found_reply
        else:
            answer = prompt.no_model_reply
        produced = 0
        finish = "stop"
        for piece in pieces(answer):
            if job.cancel.is_set():
                return
            cost = approx_token_count(piece)
            if produced + cost > job.sampling.max_tokens:
                finish = "length"
                break
            produced += cost
            yield Chunk(delta=piece)
            await asyncio.sleep(0)  # a real stream: let other calls (and cancellation) in
        yield Chunk(finish_reason=finish)
