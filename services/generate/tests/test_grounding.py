"""Abstention and the sentence check, over real gRPC with the extractive backend and with the
openai backend against the OpenAI-protocol test server (which answers what it is scripted to)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from services.generate.config import GenerateSettings
from services.generate.domain import PassageRef
from services.generate.grounding import abstains, check_answer, support_for
from services.generate.tests.conftest import Serve, ask, collect, make_settings
from testing.fake_openai import FakeOpenAI, running
from zhiku.v1 import common_pb2

from .test_openai_backend import openai_settings

THRESHOLD = GenerateSettings.model_fields["abstain_below"].default
SIMILAR = GenerateSettings.model_fields["abstain_unless_similar"].default

RAIL = [
    (
        "rail.md",
        "广茂铁路是中国广东省一条起自广州西站的铁路，全长364.6公里，由三茂铁路股份有限公司管理运营。",
    ),
    ("snake.md", "钩盲蛇是一种体型细小的盲蛇，主要以蚂蚁和白蚁的幼虫为食。"),
]


async def test_a_question_the_passages_cannot_answer_is_abstained_in_its_language(serve: Serve) -> None:
    """瘰鳞蛇 is in no passage: the snake passage is about another snake's food."""
    before = REGISTRY.get_sample_value("zhiku_generate_abstentions_total", {"backend": "extractive"}) or 0
    stub = await serve(make_settings(backend="extractive"))
    messages = [message async for message in stub.Generate(ask("瘰鳞蛇主要以什么为食？", RAIL))]
    assert messages[0].abstained and "".join(m.delta for m in messages) == "根据已知信息无法回答该问题。"
    assert not any(m.abstained for m in messages[1:])
    assert messages[-1].finish_reason == "stop" and not messages[-1].HasField("grounding")
    english = [m async for m in stub.Generate(ask("What does the Sahara horned viper eat?", RAIL))]
    assert english[0].abstained and english[0].delta.startswith("The knowledge base does not contain")
    after = REGISTRY.get_sample_value("zhiku_generate_abstentions_total", {"backend": "extractive"})
    assert after == before + 2


async def test_an_answerable_question_is_answered_and_every_sentence_checked(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    messages = [m async for m in stub.Generate(ask("广茂铁路全长多少公里？", RAIL))]
    assert not messages[0].abstained
    answer = "".join(m.delta for m in messages)
    assert "364.6公里" in answer and "[1]" in answer
    grounding = messages[-1].grounding
    checks = {p.number: (p.cited, p.supported) for p in grounding.passages}
    assert checks[1] == (True, True)  # quoted verbatim: cited and backed
    assert not checks[2][0]
    assert list(grounding.unsupported) == []


async def test_a_sentence_in_no_passage_is_reported_unsupported(serve: Serve) -> None:
    """The scripted model cites [1] for one true sentence and one invented one."""
    invented = "The line also carries 9 million tourists to Hainan every year [1]."
    tokens = ["Guangmao ", "railway ", "is ", "364.6 ", "km ", "long ", "[1]. ", *invented.split(" ")]
    tokens = [token if token.endswith(" ") or token == tokens[-1] else token + " " for token in tokens]
    passages = [("rail.md", "The Guangmao railway in Guangdong is 364.6 km long and runs to Maoming.")]
    async with running(FakeOpenAI(tokens)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        deltas, final = await collect(stub.Generate(ask("How long is the Guangmao railway?", passages)))
    answer = "".join(deltas)
    [unsupported] = final.grounding.unsupported
    assert unsupported.text.startswith("The line also carries") and "[1]" in unsupported.text
    assert answer[unsupported.start : unsupported.end] == unsupported.text
    [check] = final.grounding.passages
    assert check.cited and check.supported  # the first sentence is backed by it


def test_support_weighs_rare_names_over_common_words() -> None:
    passages = [PassageRef(1, "snake.md", RAIL[1][1], 0.9)]
    assert support_for("钩盲蛇主要以什么为食？", passages) == 1.0
    assert support_for("瘰鳞蛇主要以什么为食？", passages) < THRESHOLD
    # A name split differently still counts: the subject of one file, the fact in another chunk.
    chunks = [
        PassageRef(1, "a.md", "钩盲蛇分布于亚洲。", 0.9),
        PassageRef(2, "a.md", "它以白蚁的幼虫为食。", 0.8),
    ]
    assert support_for("钩盲蛇以什么为食？", chunks) == 1.0


def test_a_passage_close_in_meaning_rescues_a_question_its_words_miss() -> None:
    """Few of the question's words, but the retrieve service's embedding similarity says the
    passage is about it (a paraphrase): answer. Neither signal: abstain."""
    question = "瘰鳞蛇主要以什么为食？"
    close = [PassageRef(1, "snake.md", RAIL[1][1], 0.7, dense_score=SIMILAR + 0.01)]
    far = [PassageRef(1, "snake.md", RAIL[1][1], 0.7, dense_score=SIMILAR - 0.01)]
    unknown = [PassageRef(1, "snake.md", RAIL[1][1], 0.7)]  # sparse search: no similarity
    assert not abstains(question, close, THRESHOLD, SIMILAR)
    assert abstains(question, far, THRESHOLD, SIMILAR)
    assert abstains(question, unknown, THRESHOLD, SIMILAR)
    assert abstains(question, close, THRESHOLD, 1.0)  # 1: the rescue is off
    assert not abstains(question, far, 0.0, SIMILAR)  # 0: never abstains
    assert not abstains("钩盲蛇主要以什么为食？", far, THRESHOLD, SIMILAR)  # its words are there


def test_the_retrieve_services_dense_score_reaches_the_rule() -> None:
    """The gateway forwards retrieve's Passage messages as they are; the rule reads their field."""
    hit = common_pb2.Passage(file_name="snake.md", text=RAIL[1][1], score=0.7, dense_score=SIMILAR + 0.01)
    ref = PassageRef.from_pb(1, hit)
    assert ref.dense_score == pytest.approx(SIMILAR + 0.01)
    assert not abstains("瘰鳞蛇主要以什么为食？", [ref], THRESHOLD, SIMILAR)


def test_sentences_citing_nothing_are_checked_against_every_passage() -> None:
    passages = [
        PassageRef(1, "a.md", "Refunds are issued within 30 days.", 0.9),
        PassageRef(2, "b.md", "x", 0.5),
    ]
    check = check_answer("Refunds are issued within 30 days. Shipping is free worldwide.", passages)
    assert [u.text for u in check.unsupported] == ["Shipping is free worldwide."]
    assert [(p.cited, p.supported) for p in check.passages] == [(False, True), (False, False)]


def test_an_english_name_is_there_or_not_but_common_words_may_be_paraphrased() -> None:
    refunds = [PassageRef(1, "refunds.md", "Refunds are issued within 30 days of purchase.", 0.9)]
    # "Mongolia" is a name: its letters being in the passage proves nothing.
    assert support_for("What is the capital of Mongolia?", refunds) < THRESHOLD
    # Common words get partial credit ("refund" for "refunds", letters of "until"), so a question
    # phrased in its own words still passes.
    assert support_for("How many days until a refund is issued?", refunds) >= THRESHOLD
