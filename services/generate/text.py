"""Language detection and tokenizer-free token estimates, shared by prompts and backends."""

from __future__ import annotations

import math
import re

from services.generate.domain import Language

# CJK Unified Ideographs (+ extension A and compatibility ideographs): the Chinese characters.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
# One match per estimated token unit: a CJK character, a Latin word, a number, a symbol.
_TOKEN_UNIT = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[A-Za-z]+|\d+|[^\sA-Za-z\d]")

# A Latin word weighs as much as two Chinese characters (a Chinese word is ~1.5-2 characters),
# so "什么是Kubernetes的Pod" reads as Chinese and "How do I use 知库?" as English.
_LATIN_WORD_WEIGHT = 2
ZH_THRESHOLD = 0.5


def cjk_ratio(text: str) -> float:
    """Share of Chinese in ``text``, counting Chinese characters against weighted Latin words."""
    cjk = len(_CJK.findall(text))
    words = len(_LATIN_WORD.findall(text))
    total = cjk + _LATIN_WORD_WEIGHT * words
    return cjk / total if total else 0.0


def detect_language(text: str) -> Language:
    """ "zh" when the text is mostly Chinese, else "en" (also for text with no letters at all)."""
    return "zh" if cjk_ratio(text) >= ZH_THRESHOLD else "en"


def approx_token_count(text: str) -> int:
    """Token estimate for backends whose tokenizer is not available here (OpenAI upstreams).

    Rough BPE behaviour: a Chinese character or symbol is about one token, a Latin word one
    token per four letters. Used to trim passages with a safety margin, never for billing
    when the backend reports real usage.
    """
    return sum(math.ceil(len(unit) / 4) for unit in _TOKEN_UNIT.findall(text))
