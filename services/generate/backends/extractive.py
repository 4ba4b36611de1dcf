"""The ``extractive`` backend: answers with the passages' best sentences, no model at all.

It keeps knowledge-base chat useful where no LLM can run (tiny pods, CI, air-gapped demos)
and gives tests a deterministic backend. Sentences are scored by character-bigram overlap with
the question, which needs no tokenizer and treats Chinese and English alike ("refund" still
matches "refunds", "退款政策" matches "退款").
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from services.generate.backends.base import Backend
from services.generate.config import GenerateSettings
from services.generate.domain import Chunk, Job, ModelInfo, PassageRef
from services.generate.text import approx_token_count

MODEL_ID = "extractive"
# Nominal: no model window, passages are never trimmed for this backend.
CONTEXT_WINDOW = 1 << 20
MAX_SENTENCES = 3
# Secondary sentences must score at least this share of the best one to be quoted too.
RELATIVE_CUTOFF = 0.5

_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+|\n+")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_HAN}]+|[a-z0-9]+")
_CJK_RUN = re.compile(f"[{_HAN}]+")
# Stream pieces: up to four Chinese characters, or a word with its trailing spaces.
_PIECE = re.compile(f"[{_HAN}]{{1,4}}|[^\\s{_HAN}]+\\s*|\\s+")
_STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in"}
    | {"is", "it", "of", "on", "or", "the", "to", "was", "what", "when", "where", "which", "who", "why"}
    | {"with", "you", "your"}
)
_ZH_STOPWORDS = frozenset("的了是吗呢吧啊么什怎如何哪")


def features(text: str) -> set[str]:
    """Character bigrams of each word (Latin) or run (Chinese); single characters stand alone.

    Common English function words and Chinese particles are dropped first, so "what is the"
    does not make every sentence look relevant.
    """
    grams: set[str] = set()
    for token in _TOKEN.findall(text.lower()):
        if _CJK_RUN.fullmatch(token):
            token = "".join(ch for ch in token if ch not in _ZH_STOPWORDS)
        elif token in _STOPWORDS:
            continue
        if len(token) == 1:
            grams.add(token)
        grams.update(token[i : i + 2] for i in range(len(token) - 1))
    return grams


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and len(s.strip()) > 1]


@dataclass(frozen=True)
class ScoredSentence:
    score: float
    passage: PassageRef
    position: int
    text: str


def rank_sentences(question: str, passages: Sequence[PassageRef]) -> list[ScoredSentence]:
    """All sentences, best first: cosine of the bigram sets, then passage order as tie-break."""
    wanted = features(question)
    scored: list[ScoredSentence] = []
    for passage in passages:
        for position, sentence in enumerate(split_sentences(passage.text)):
            grams = features(sentence)
            overlap = len(wanted & grams)
            score = overlap / math.sqrt(len(wanted) * len(grams)) if overlap else 0.0
            scored.append(ScoredSentence(score, passage, position, sentence))
    scored.sort(key=lambda s: (-s.score, s.passage.number, s.position))
    return scored


def compose_answer(question: str, passages: Sequence[PassageRef], language: str) -> str:
    """The best sentence, plus up to two close runners-up, each followed by its citation."""
    ranked = rank_sentences(question, passages)
    if not ranked:
        return ""
    best = ranked[0]
    if best.score == 0.0:
        # Retrieval judged these passages relevant even if no words overlap: quote the top one.
        chosen = [s for s in ranked if s.passage.number == passages[0].number][:1]
    else:
        chosen = [s for s in ranked if s.score >= best.score * RELATIVE_CUTOFF][:MAX_SENTENCES]
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

    async def stream(self, job: Job) -> AsyncIterator[Chunk]:
        prompt = job.prompt
        if prompt.kind == "kb_chat":
            answer = compose_answer(prompt.question, prompt.passages, prompt.language)
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
