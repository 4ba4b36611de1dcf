"""The pure parts of ``make bench-answers``: how answers are found, replies judged, and the
question sets (splits, samples, follow-up conversations) built. Real CMRC/SQuAD data, no stack."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.answer_metrics import judge, marker_numbers, repeats_a_sentence, summary
from bench.answer_sets import (
    PRONOUN,
    Article,
    Question,
    build_follow_ups,
    contains_answer,
    fixed_sample,
    load_cmrc,
    load_squad,
    normalize,
    split_of,
    without_subject,
)
from bench.bench_embed import evaldata_dir


@pytest.fixture(scope="module")
def articles() -> list[Article]:
    return load_cmrc(evaldata_dir())


def test_normalize_folds_width_case_and_whitespace() -> None:
    assert normalize("  ＡＢＣ１２３\u3000and\n\tMore ") == "abc123 and more"


def test_answer_found_after_normalisation_and_any_of_the_gold_answers() -> None:
    assert contains_answer("由光荣和Ω－Force合作开发。", ["光荣和ω-force"])
    assert contains_answer("It is the RNA   Interference pathway [1].", ["dna", "RNA interference"])
    assert not contains_answer("It is the RNA pathway.", ["RNA interference"])
    assert not contains_answer("anything", [])
    assert not contains_answer("anything", [" "])  # a blank gold answer matches nothing


def test_repeated_sentence_detected_through_markers_and_punctuation() -> None:
    assert repeats_a_sentence("Refunds take 30 days [1]. Ask support. Refunds take 30 days [2].")
    assert repeats_a_sentence("退款需要三十天。请联系客服！退款需要三十天[1]。")
    assert not repeats_a_sentence("Refunds take 30 days. Shipping takes five days.")
    assert not repeats_a_sentence("是的。是的。")  # too short to count as a looping sentence


def test_citation_markers() -> None:
    assert marker_numbers("A [1][2, 3]. B [4，5].") == {1, 2, 3, 4, 5}
    assert marker_numbers("no markers, [x] or [] aside") == set()


def test_subject_replaced_by_pronoun_brackets_included() -> None:
    text, form = without_subject("《战国无双3》是由哪两个公司合作开发的？", "战国无双3", "pronoun")
    assert (text, form) == (f"{PRONOUN}是由哪两个公司合作开发的？", "pronoun")


def test_subject_dropped_with_its_particle_when_it_opens_the_question() -> None:
    assert without_subject("赵鹏的职业是什么？", "赵鹏", "dropped") == ("职业是什么？", "dropped")


def test_subject_not_at_the_start_gets_the_pronoun_instead_of_being_dropped() -> None:
    text, form = without_subject("在战国无双3中谁是主角？", "战国无双3", "dropped")
    assert (text, form) == (f"在{PRONOUN}中谁是主角？", "pronoun")


def test_split_is_deterministic_by_question_and_about_half(articles: list[Article]) -> None:
    questions = [q for a in articles for q in a.asked(gold_in_kb=True)]
    splits = Counter(q.split for q in questions)
    assert splits["dev"] + splits["test"] == len(questions) == 3219
    assert 0.4 < splits["test"] / len(questions) < 0.6
    assert all(q.split == split_of(q.id) for q in questions)
    # The indexed/held-out halves (by article) hold questions of both splits.
    cells = Counter((q.split, a.half) for a in articles for q in a.asked(gold_in_kb=True))
    assert len(cells) == 4 and min(cells.values()) > 600
    assert 0.4 < sum(a.half == "indexed" for a in articles) / len(articles) < 0.6


def test_fixed_sample_ignores_input_order_and_its_prefix_is_the_smaller_sample(
    articles: list[Article],
) -> None:
    questions = [q for a in articles for q in a.asked(gold_in_kb=True)]
    shuffled = list(questions)
    random.Random(7).shuffle(shuffled)
    sample = fixed_sample(questions, key=lambda q: q.id, size=300)
    assert fixed_sample(shuffled, key=lambda q: q.id, size=300) == sample
    assert fixed_sample(questions, key=lambda q: q.id, size=40) == sample[:40]
    assert len({q.id for q in sample}) == 300


def test_follow_ups_need_the_first_question(articles: list[Article]) -> None:
    conversations = build_follow_ups(articles)
    by_article = {a.id: a for a in articles}
    assert len(conversations) >= 300
    assert sum(c.second.split == "test" for c in conversations) >= 100
    assert Counter(c.form for c in conversations).keys() == {"pronoun", "dropped"}
    for conversation in conversations:
        article = by_article[conversation.id.split(":")[0]]
        assert conversation.first.id != conversation.second.id
        assert conversation.first.gold_file == conversation.second.gold_file == article.file_name
        assert article.title in conversation.original
        assert article.title not in conversation.second.text
        added = conversation.second.text.count(PRONOUN) - conversation.original.count(PRONOUN)
        assert (added > 0) == (conversation.form == "pronoun")
    assert build_follow_ups(list(reversed(articles))) == conversations


def test_squad_sets_match_the_sample() -> None:
    squad = load_squad(evaldata_dir())
    assert (len(squad.documents), len(squad.answerable), len(squad.unanswerable)) == (411, 242, 258)
    names = {d.file_name for d in squad.documents}
    assert all(q.gold_file in names and q.answers for q in squad.answerable)
    assert all(not q.answers for q in squad.unanswerable)


QUESTION = Question("q1", "What does Zhiku store?", ("knowledge bases",), "zhiku.txt", "test")


def _response(content: str, citations: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {
        "choices": [{"message": {"role": "assistant", "content": content}}],
        "citations": citations,
        **extra,
    }


def test_judge_reads_citations_from_markers_when_the_response_lacks_the_new_fields() -> None:
    citations = [
        {"file_name": "other.txt", "text": "Zhiku stores knowledge bases too."},
        {"file_name": "zhiku.txt", "text": "Zhiku stores Knowledge Bases."},
    ]
    judged = judge(QUESTION, _response("It stores knowledge bases [2].", citations), 0.5)
    assert judged.answer_in_reply and judged.gold_cited and judged.cited_gold_holds_answer
    assert judged.gold_retrieved and judged.question_language
    assert judged.abstained is None and judged.unsupported is None and judged.check_agrees is None
    figures = summary([judged])
    assert figures["abstained"] is None and figures["check_agrees"] is None
    assert figures["answer_in_reply"] == 1.0

    uncited = judge(QUESTION, _response("It stores knowledge bases [1].", citations), 0.5)
    assert uncited.gold_retrieved and not uncited.gold_cited and not uncited.cited_gold_holds_answer


def test_judge_prefers_the_cited_flag_and_compares_the_support_check() -> None:
    citations = [
        {"index": 1, "file_name": "zhiku.txt", "text": "Zhiku stores knowledge bases.", "cited": True},
        {"index": 2, "file_name": "other.txt", "text": "Unrelated.", "cited": False},
    ]
    response = _response("It stores knowledge bases [2].", citations, abstained=False, unsupported=[])
    judged = judge(QUESTION, response, 0.5)
    assert judged.gold_cited and judged.cited_gold_holds_answer  # `cited` wins over the marker
    assert judged.abstained is False and judged.unsupported == 0 and judged.check_agrees is True

    doubted = judge(QUESTION, {**response, "unsupported": [{"text": "It stores", "start": 0, "end": 9}]}, 0.5)
    assert doubted.check_agrees is False

    abstained = judge(QUESTION, _response("无法回答。", citations, abstained=True, unsupported=[]), 0.5)
    assert abstained.abstained and abstained.check_agrees is None  # the check does not run then
    assert not abstained.question_language  # a Chinese reply to an English question
