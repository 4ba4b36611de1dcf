"""Lexical text features shared by the extractive backend and the grounding checks.

Character bigrams of each word (Latin) or run (Chinese) need no tokenizer and treat Chinese
and English alike ("refund" still matches "refunds", "退款政策" matches "退款"), which is what
both a sentence picker and a "does this passage say this sentence?" check need.
"""

from __future__ import annotations

import re
import unicodedata

_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+|\n+")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAN_CLASS = _HAN
_TOKEN = re.compile(f"[{_HAN}]+|[a-z0-9]+")
_CJK_RUN = re.compile(f"[{_HAN}]+")
_STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in"}
    | {"is", "it", "of", "on", "or", "the", "to", "was", "what", "when", "where", "which", "who", "why"}
    | {"with", "you", "your", "did", "were", "has", "have", "had", "that", "this", "its", "their"}
)
_ZH_STOPWORDS = frozenset("的了是吗呢吧啊么什怎如何哪")
# Citation markers a reply carries: [1], [2][3], [1, 2].
CITATION = re.compile(r"\[(\d+(?:\s*[,，]\s*\d+)*)\]")


def normalized(text: str) -> str:
    """NFKC (full-width forms folded) and lower case: the form every comparison uses."""
    return unicodedata.normalize("NFKC", text).lower()


def features(text: str) -> set[str]:
    """Character bigrams of each word (Latin) or run (Chinese); single characters stand alone.

    Common English function words and Chinese particles are dropped first, so "what is the"
    does not make every sentence look relevant.
    """
    grams: set[str] = set()
    for token in _TOKEN.findall(normalized(text)):
        if _CJK_RUN.fullmatch(token):
            token = "".join(ch for ch in token if ch not in _ZH_STOPWORDS)
        elif token in _STOPWORDS:
            continue
        if len(token) == 1:
            grams.add(token)
        grams.update(token[i : i + 2] for i in range(len(token) - 1))
    return grams


def char_unigrams(text: str) -> set[str]:
    """The Chinese characters of ``text`` (particles dropped): "用途" then still meets "用于"."""
    return {ch for run in _CJK_RUN.findall(normalized(text)) for ch in run if ch not in _ZH_STOPWORDS}


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and len(s.strip()) > 1]


# The end of an answer's sentence: its punctuation, and the citation markers that follow it
# ("... 30 days. [1] Next ..." cites [1] for the first sentence, not the second).
_ANSWER_SENTENCE_END = re.compile(r"(?:[。！？；!?;]|\.(?=\s|$|\[))(?:\s*\[\d+(?:\s*[,，]\s*\d+)*\])*|\n+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of an answer, each with the citation markers that
    follow its end, whitespace trimmed, so a checker can point at the exact characters."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _ANSWER_SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    trimmed = []
    for begin, end in spans:
        piece = text[begin:end]
        if len(piece.strip()) <= 1:
            continue
        left = len(piece) - len(piece.lstrip())
        right = len(piece.rstrip())
        trimmed.append((begin + left, begin + right))
    return trimmed


def cited_numbers(text: str) -> set[int]:
    """The passage numbers ``text`` cites with [n] markers."""
    return {int(n) for group in CITATION.findall(text) for n in re.split(r"[,，]", group)}


def without_citations(text: str) -> str:
    return CITATION.sub("", text)
