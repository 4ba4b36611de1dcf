"""The terms a question is about, weighted by how rare they are, and how much of them a text holds.

Whether retrieved passages can answer a question, and what a follow-up question refers to,
both come down to its rare words: "瘰鳞蛇主要以什么为食？" is about 瘰鳞蛇, whatever passages about
other snakes say about food. Words come from jieba (already the retrieve service's tokenizer)
and weigh ``log(total / frequency)`` by jieba's own dictionary counts, so a name it has never
seen weighs most and "主要" little; question words and particles are dropped. English words
get the same treatment (jieba knows few of them, so most weigh the same, which is right for
content words once function words are gone).

A term counts as present in a text when it occurs there, or in part: the share of its character
bigrams found (a tokenizer slip such as "硕塞是" still finds "硕塞"; "refund" finds "refunds"),
or half the share of its characters.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping

from services.generate.lexical import normalized

# Words that carry the question, not its subject.
_QUESTION_WORD = re.compile(r"哪|什么|怎|谁|几|多少|为何|如何|是否|吗|呢|么")
_ZH_STOPWORDS = frozenset(
    [
        "的",
        "了",
        "是",
        "有",
        "在",
        "和",
        "与",
        "及",
        "或",
        "被",
        "由",
        "于",
        "为",
        "对",
        "从",
        "中",
        "上",
        "下",
        "其",
        "之",
        "这",
        "那",
        "个",
        "一个",
        "时候",
        "能",
        "给",
        "我",
        "你",
        "他",
        "她",
        "它",
        "们",
        "一下",
        "介绍",
        "请",
        "有着",
        "具有",
        "主要",
        "分别",
        "以",
        "所",
        "将",
        "把",
        "还",
        "也",
        "都",
        "又",
        "就",
        "则",
        "而",
        "并",
        "会",
        "可以",
        "可",
        "要",
        "该",
        "此",
        "做",
    ]
)
_EN_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "being",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "about",
        "after",
        "also",
        "any",
        "before",
        "between",
        "both",
        "each",
        "other",
        "over",
        "same",
        "some",
        "such",
        "through",
        "under",
        "up",
    ]
)
_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+")


@functools.cache
def _dictionary() -> tuple[Mapping[str, int], float]:
    """jieba's word counts, loaded once per process (about a second, on first use)."""
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    return jieba.dt.FREQ, float(jieba.dt.total)


def warm_up() -> None:
    """Load the dictionary now (at service start) rather than inside the first request."""
    _dictionary()


def salient_terms(text: str, *, guess_names: bool = False) -> dict[str, float]:
    """The content words of ``text`` with their weights (rare words weigh more).

    Without ``guess_names`` jieba's HMM stays off: on a short question it also invents words
    ("多少天年假" -> "天年"), and an invented word weighs like a rare name, so unknown names come
    out as single characters (what the support check wants). With it, they come out whole (what
    telling "does this question name its own subject?" needs)."""
    import jieba

    counts, total = _dictionary()
    weights: dict[str, float] = {}
    for word in jieba.lcut(normalized(text), HMM=guess_names):
        if not _WORD.fullmatch(word) or word in _ZH_STOPWORDS or word in _EN_STOPWORDS:
            continue
        if _QUESTION_WORD.search(word):
            continue
        if word.isascii() and word not in counts:
            # jieba counts no English: a name or a number weighs like a name jieba does not
            # know, any other word like a common Chinese word.
            weights[word] = NAME_WEIGHT if word in names(text) else COMMON_WORD_WEIGHT
            continue
        weights[word] = math.log(total / (counts.get(word, 0) + 1))
    return weights


NAME_WEIGHT = 17.9  # about log(total) for jieba's dictionary: a word it has never seen
COMMON_WORD_WEIGHT = 9.0  # about a common Chinese word (主要 6.9, 发现 7.8, 化石 10.5)
_CAPITALIZED = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z]+|\b[A-Za-z]*\d[A-Za-z0-9]*")


def names(text: str) -> set[str]:
    """Latin words that are names or codes: capitalized inside a sentence, or holding digits
    ("Mongolia", "iPhone15", "1998"), lower-cased like the terms."""
    return {match.lower() for match in _CAPITALIZED.findall(text.strip())}


def presence(term: str, text: str, *, name: bool = False) -> float:
    """1 when ``term`` occurs in ``text`` (both normalized), or, for a Latin word, when a word
    of ``text`` starts with its stem ("refunds" finds "refund"). Otherwise partial credit: the
    share of the term's character bigrams found, or half the share of its characters if that
    is more (a word split differently, "年假" against "带薪年假", still counts for something) —
    except for a Latin ``name`` ("Mongolia"), whose letters are in any English text and prove
    nothing: a name is there or it is not."""
    if term in text:
        return 1.0
    if term.isascii() and len(term) > _STEM and re.search(rf"\b{re.escape(term[:_STEM])}", text):
        return 1.0
    if (name and term.isascii()) or len(term) < 2:
        return 0.0
    grams = [term[i : i + 2] for i in range(len(term) - 1)]
    bigrams = sum(gram in text for gram in grams) / len(grams)
    characters = sum(char in text for char in term) / len(term)
    return max(bigrams, CHARACTER_CREDIT * characters)


CHARACTER_CREDIT = 0.5
_STEM = 5


# Weights are squared before averaging: a missing rare name must outweigh several common words
# that happen to be present (measured on CMRC's held-out half, dev split; docs/answers.md).
EMPHASIS = 2.0


def coverage(terms: Mapping[str, float], text: str) -> float:
    """How much of ``terms`` (weights emphasised) ``text`` holds, in [0, 1]; 1 with no terms."""
    if not terms:
        return 1.0
    body = normalized(text)
    total: float = sum(weight**EMPHASIS for weight in terms.values())
    found: float = sum(
        weight**EMPHASIS * presence(term, body, name=weight >= NAME_WEIGHT) for term, weight in terms.items()
    )
    return found / total
