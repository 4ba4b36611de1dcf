"""The question sets of ``make bench-answers``: which passages each knowledge base holds, which
questions are asked of it, and the fixed, split samples the report is made of.

Everything here is deterministic (hashes of ids, a seeded shuffle), so two runs, or a run
before and after a change, ask the same questions. Splits follow the house rule "never tune a
method on the questions you report it on": questions fall into ``dev`` or ``test`` by
a hash of each question's id (a conversation follows its second question), and the report uses
``test``. A hash of the article id puts each article in the indexed or the held-out half (the
unanswerable set: questions whose passage is not in the knowledge base).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

Split = Literal["dev", "test"]
Half = Literal["indexed", "held_out"]
SubjectForm = Literal["pronoun", "dropped"]

SAMPLE_SEED = "zhiku-bench-answers-1"
PRONOUN = "它"
_WHITESPACE = re.compile(r"\s+")

T = TypeVar("T")


def normalize(text: str) -> str:
    """NFKC (full-width forms folded), case folded, whitespace runs collapsed to one space:
    the form in which an answer is looked for in a reply or a passage."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether any of the gold ``answers`` occurs in ``text`` (both normalised)."""
    haystack = normalize(text)
    return any(needle and needle in haystack for needle in (normalize(a) for a in answers))


def _even(key: str) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 2 == 0


def split_of(question_id: str) -> Split:
    """``dev`` (for tuning) or ``test`` (for the report), by a hash of the question's id: about
    half each. The answering methods' settings (sentence ranking, abstention threshold) were
    chosen on the dev questions of this very rule."""
    return "dev" if _even(question_id) else "test"


def half_of(article_id: str) -> Half:
    """The CMRC half an article belongs to (a hash of its id)."""
    return "indexed" if _even(article_id) else "held_out"


def fixed_sample(items: Sequence[T], key: Callable[[T], str], size: int | None = None) -> list[T]:
    """A seeded shuffle of ``items`` (ordered by ``key`` first, so the input order does not
    matter), cut to ``size``: any prefix of it is itself a fixed random sample."""
    ordered = sorted(items, key=key)
    random.Random(SAMPLE_SEED).shuffle(ordered)
    return ordered if size is None else ordered[:size]


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: tuple[str, ...]  # empty: SQuAD says the passage does not answer it
    gold_file: str | None  # the file of its passage in the knowledge base asked; None: not there
    split: Split


@dataclass(frozen=True)
class Document:
    """One passage, uploaded as one file; the file name says which passage a citation is."""

    file_name: str
    text: str


@dataclass(frozen=True)
class Article:
    """A CMRC 2018 article: one passage (every article of the dev set has exactly one)."""

    id: str
    title: str
    context: str
    questions: tuple[tuple[str, str, tuple[str, ...]], ...]  # (id, question, answers)

    @property
    def file_name(self) -> str:
        return f"cmrc-{self.id}.txt"

    @property
    def half(self) -> Half:
        return half_of(self.id)

    def document(self) -> Document:
        return Document(self.file_name, self.context)

    def asked(self, gold_in_kb: bool) -> list[Question]:
        gold = self.file_name if gold_in_kb else None
        return [Question(qid, text, answers, gold, split_of(qid)) for qid, text, answers in self.questions]


def load_cmrc(root: Path) -> list[Article]:
    data = json.loads((root / "cmrc2018" / "cmrc2018_dev.squad.json").read_text(encoding="utf-8"))
    articles = []
    for article in data["data"]:
        (paragraph,) = article["paragraphs"]  # the dev set has one paragraph per article
        questions = tuple(
            (qa["id"], qa["question"].strip(), tuple(dict.fromkeys(a["text"] for a in qa["answers"])))
            for qa in paragraph["qas"]
            if qa["question"].strip()
        )
        articles.append(Article(article["id"], article["title"].strip(), paragraph["context"], questions))
    return articles


@dataclass(frozen=True)
class SquadSet:
    documents: list[Document]  # every distinct passage (411)
    answerable: list[Question]
    unanswerable: list[Question]


def squad_file_name(context: str) -> str:
    return f"squad-{hashlib.sha1(context.strip().encode()).hexdigest()[:12]}.txt"


def load_squad(root: Path) -> SquadSet:
    folder = root / "squad2_sample"
    queries = json.loads((folder / "queries.json").read_text(encoding="utf-8"))["queries"]
    truth = json.loads((folder / "ground_truth.json").read_text(encoding="utf-8"))
    documents: dict[str, Document] = {}
    answerable, unanswerable = [], []
    for query in queries:
        context = query["context"].strip()
        name = squad_file_name(context)
        documents.setdefault(name, Document(name, context))
        gold = truth[query["id"]]
        answers = tuple(dict.fromkeys(a for a in gold["answers"] if a.strip()))
        question = Question(query["id"], query["question"].strip(), answers, name, split_of(query["id"]))
        (unanswerable if gold["is_impossible"] else answerable).append(question)
    return SquadSet(list(documents.values()), answerable, unanswerable)


# Follow-ups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowUp:
    """Two turns about one article: the second names its subject only through the first."""

    id: str
    first: Question
    second: Question  # its text with the subject replaced or left out
    original: str  # the second question as CMRC asks it
    form: SubjectForm


def _subject_spellings(title: str) -> list[str]:
    return [f"《{title}》", title]  # the bracketed form first, so its brackets go with it


def without_subject(question: str, title: str, form: SubjectForm) -> tuple[str, SubjectForm]:
    """``question`` with the article's ``title`` replaced by a pronoun, or left out.

    Leaving it out only reads as Chinese where the title opens the question ("X的职业是什么？"
    -> "职业是什么？", its "的" dropped too); elsewhere ("在X中…") the pronoun is used instead.
    Returns the new text and the form actually used.
    """
    if form == "dropped":
        for spelling in _subject_spellings(title):
            if question.startswith(spelling):
                rest = question[len(spelling) :]
                rest = rest[1:] if rest.startswith("的") else rest
                if rest.strip() and title not in rest:
                    return rest.lstrip(" ，,"), "dropped"
        form = "pronoun"
    text = question
    for spelling in _subject_spellings(title):
        text = text.replace(spelling, PRONOUN)
    return text, form


def follow_up_of(article: Article, form: SubjectForm) -> FollowUp | None:
    """The conversation built from ``article``, or None when it has no question naming its
    title or no second question. The second question is one that names the title (chosen by
    a seeded draw); the first is another question, one that names the title too when there is
    one (so the conversation establishes the subject), else any other."""
    title = article.title
    if not title:
        return None
    questions = article.asked(gold_in_kb=True)
    naming = [q for q in questions if title in q.text]
    if not naming or len(questions) < 2:
        return None
    rng = random.Random(f"{SAMPLE_SEED}:{article.id}")
    second = rng.choice(sorted(naming, key=lambda q: q.id))
    others = sorted((q for q in questions if q.id != second.id), key=lambda q: q.id)
    first = rng.choice([q for q in others if title in q.text] or others)
    text, used = without_subject(second.text, title, form)
    rewritten = Question(second.id, text, second.answers, second.gold_file, second.split)
    return FollowUp(f"{article.id}:{first.id}>{second.id}", first, rewritten, second.text, used)


def build_follow_ups(articles: Sequence[Article]) -> list[FollowUp]:
    """One conversation per eligible article (every one, none filtered by how retrieval fares),
    the subject alternately replaced by a pronoun and left out."""
    built = []
    for article in sorted(articles, key=lambda a: a.id):
        form: SubjectForm = "pronoun" if len(built) % 2 == 0 else "dropped"
        conversation = follow_up_of(article, form)
        if conversation is not None:
            built.append(conversation)
    return built
