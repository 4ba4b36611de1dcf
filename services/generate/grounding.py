"""Whether retrieved passages can answer a question, and whether an answer says what they say.

Two checks every backend shares, so an LLM and the extractive default are held to the same bar:

- **Before answering** (:func:`abstains`): the best coverage, by the passages of any one
  file, of the question's rare terms (:func:`support_for`, :mod:`services.generate.terms`).
  Below ``ZHIKU_GENERATE_ABSTAIN_BELOW`` the service abstains (it says, in the question's
  language, that the knowledge base cannot answer, instead of passing off unrelated passages
  as an answer), unless a passage is close in meaning: its ``dense_score`` (the embedding
  similarity the retrieve service reports, absolute unlike the fused hybrid score) reaches
  ``ZHIKU_GENERATE_ABSTAIN_UNLESS_SIMILAR``. Words alone miss paraphrases ("成立" asked, "创办"
  written); similarity alone cannot tell a passage on the asked subject from one on a
  neighbouring subject. Fused retrieval scores cannot tell either: hybrid search always
  returns its five nearest chunks, and their fused scores are relative to each other.
- **After answering** (:func:`check_answer`): each sentence of the answer against the passages
  it cites with ``[n]`` (all passages when it cites none), by the share of its character
  bigrams a passage holds. A passage is ``supported`` when it backs a sentence that cites it
  (or that cites nothing); sentences no passage backs are listed with their offsets, so a
  client can mark them.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.generate.domain import AnswerCheck, PassageCheck, PassageRef, Unsupported
from services.generate.lexical import cited_numbers, features, normalized, sentence_spans, without_citations
from services.generate.terms import coverage, salient_terms

# A sentence counts as backed by a passage holding at least this share of its bigrams.
SENTENCE_SUPPORT = 0.6


def support_for(question: str, passages: Sequence[PassageRef]) -> float:
    """The best share of the question's (emphasised) rare terms that one file's passages hold
    (a document's subject and the fact asked about often sit in different chunks of it)."""
    terms = salient_terms(question)
    by_file: dict[str, list[str]] = {}
    for passage in passages:
        by_file.setdefault(passage.file_name or f"#{passage.number}", []).append(passage.text)
    return max((coverage(terms, "\n".join(texts)) for texts in by_file.values()), default=0.0)


def abstains(asked: str, passages: Sequence[PassageRef], below: float, unless_similar: float) -> bool:
    """Whether ``passages`` cannot answer ``asked``: too few of its rare terms in any one file
    (``support_for`` under ``below``) and no passage with ``dense_score >= unless_similar``
    (1 turns the similarity rescue off; a passage without a score never rescues)."""
    if not passages or below <= 0 or support_for(asked, passages) >= below:
        return False
    return unless_similar >= 1 or max(p.dense_score for p in passages) < unless_similar


def _backing(sentence: str, passage_features: set[str]) -> float:
    wanted = features(without_citations(sentence))
    return len(wanted & passage_features) / len(wanted) if wanted else 1.0


def check_answer(answer: str, passages: Sequence[PassageRef]) -> AnswerCheck:
    """Every sentence of ``answer`` against the passages it cites (or all of them)."""
    by_number = {passage.number: passage for passage in passages}
    grams = {number: features(normalized(passage.text)) for number, passage in by_number.items()}
    cited: set[int] = set()
    backed: set[int] = set()
    unsupported: list[Unsupported] = []
    for start, end in sentence_spans(answer):
        sentence = answer[start:end]
        numbers = cited_numbers(sentence) & by_number.keys()
        cited |= numbers
        if not features(without_citations(sentence)):
            continue  # only markers or punctuation: nothing to check
        judged = numbers or by_number.keys()
        holding = {n for n in judged if _backing(sentence, grams[n]) >= SENTENCE_SUPPORT}
        backed |= holding  # those it cites, or any that back a sentence citing none
        if not holding:
            unsupported.append(Unsupported(sentence, start, end))
    return AnswerCheck(
        passages=tuple(
            PassageCheck(number=n, cited=n in cited, supported=n in backed) for n in sorted(by_number)
        ),
        unsupported=tuple(unsupported),
    )
