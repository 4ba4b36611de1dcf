"""The extractive backend over real gRPC: answers quote the best passage sentences."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.generate.backends.extractive import ExtractiveBackend, compose_answer, rank_sentences
from services.generate.domain import GenerationRequest, PassageRef
from services.generate.generator import Generator
from services.generate.lexical import features
from services.generate.prompting import PromptTemplates
from services.generate.tests.conftest import Serve, ask, collect, make_settings

ZH_PASSAGES = [
    ("handbook.pdf", "知库是一个知识库问答平台。它支持上传 PDF 和 Word 文档。"),
    (
        "policy.docx",
        "公司的年假制度如下。员工每年享有十五天带薪年假，未休完的年假可以顺延到下一年。病假需要提供医院证明。",
    ),
]
EN_PASSAGES = [
    ("shipping.md", "Orders ship from our warehouse in Berlin. Shipping takes five business days in Europe."),
    ("refunds.md", "Refunds are issued within 30 days of purchase. Contact support to start a refund."),
]


async def test_chinese_answer_quotes_best_sentence_with_citation(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    deltas, final = await collect(stub.Generate(ask("员工每年有多少天年假？", ZH_PASSAGES)))
    answer = "".join(deltas)
    assert "员工每年享有十五天带薪年假，未休完的年假可以顺延到下一年。 [2]" in answer
    assert "PDF" not in answer  # an unrelated sentence is not quoted
    assert final.finish_reason == "stop"
    assert final.usage.prompt_tokens > 0
    assert final.usage.completion_tokens > 0


async def test_english_answer_quotes_best_sentence_with_citation(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    deltas, final = await collect(
        stub.Generate(ask("When are refunds issued after a purchase?", EN_PASSAGES))
    )
    answer = "".join(deltas)
    assert answer.startswith("Refunds are issued within 30 days of purchase. [2]")
    assert "Berlin" not in answer
    assert final.finish_reason == "stop"
    assert final.usage.completion_tokens > 0


async def test_nothing_found_reply_follows_question_language(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    deltas, final = await collect(stub.Generate(ask("公司的报销流程是什么？", grounded=True)))
    assert "".join(deltas) == "抱歉，知识库中没有找到与该问题相关的内容。"
    assert final.finish_reason == "stop"
    deltas, _ = await collect(stub.Generate(ask("What is the expense policy?", grounded=True)))
    assert "".join(deltas) == "No relevant content was found in the knowledge base for this question."


async def test_plain_chat_says_there_is_no_model(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    deltas, _ = await collect(stub.Generate(ask("Tell me a joke")))
    assert "without a language model" in "".join(deltas)


async def test_max_tokens_cuts_the_answer_with_length(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    full, _ = await collect(stub.Generate(ask("When are refunds issued after a purchase?", EN_PASSAGES)))
    deltas, final = await collect(
        stub.Generate(ask("When are refunds issued after a purchase?", EN_PASSAGES, max_tokens=3))
    )
    assert final.finish_reason == "length"
    assert 0 < len("".join(deltas)) < len("".join(full))
    assert final.usage.completion_tokens <= 3


async def test_metrics_count_tokens_and_ttft(serve: Serve) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    out_before = sample("zhiku_generate_tokens_total", backend="extractive", direction="out")
    in_before = sample("zhiku_generate_tokens_total", backend="extractive", direction="in")
    ttft_before = sample("zhiku_generate_ttft_seconds_count", backend="extractive")
    stub = await serve(make_settings(backend="extractive"))
    _, final = await collect(stub.Generate(ask("When are refunds issued after a purchase?", EN_PASSAGES)))
    out_after = sample("zhiku_generate_tokens_total", backend="extractive", direction="out")
    in_after = sample("zhiku_generate_tokens_total", backend="extractive", direction="in")
    assert out_after - out_before == final.usage.completion_tokens
    assert in_after - in_before == final.usage.prompt_tokens
    assert sample("zhiku_generate_ttft_seconds_count", backend="extractive") == ttft_before + 1
    assert sample("zhiku_generate_requests_running", backend="extractive") == 0


def test_bigram_features_match_inflections_and_chinese_words() -> None:
    assert features("refunds") & features("refund")
    assert features("退款政策") & features("退款")
    assert not features("the what is")  # stop words alone carry no signal


def test_ranking_prefers_overlap_and_keeps_passage_numbers() -> None:
    passages = [
        PassageRef(1, "a.md", "Cats sleep a lot. Dogs bark at night.", 0.9),
        PassageRef(2, "b.md", "Barking dogs rarely bite.", 0.8),
    ]
    ranked = rank_sentences("why do dogs bark", passages)
    assert ranked[0].text == "Dogs bark at night."
    assert ranked[0].passage.number == 1
    assert ranked[-1].text == "Cats sleep a lot."  # no word of the question: last


def test_rare_question_terms_outweigh_the_subject_every_sentence_repeats() -> None:
    """The passage's subject is in every sentence, so it tells them apart the least: the sentence
    with the question's distinguishing words wins even when it is long."""
    passage = PassageRef(
        1,
        "rail.md",
        "广茂铁路是广东的一条铁路。广茂铁路由三茂铁路股份有限公司管理运营，"
        "经佛山、三水、肇庆、云浮、阳江至茂名市茂名站，全长364.6公里。广茂铁路于1991年通车。",
        0.9,
    )
    ranked = rank_sentences("广茂铁路全长多少公里？", [passage])
    assert "364.6公里" in ranked[0].text


def test_overlapping_chunks_never_quote_a_sentence_twice() -> None:
    shared = "员工每年享有十五天带薪年假。"
    passages = [
        PassageRef(1, "policy.docx", "公司的年假制度如下。" + shared, 0.9),
        PassageRef(2, "policy.docx", shared + "未休完的年假可以顺延到下一年。", 0.8),
    ]
    answer = compose_answer("员工每年有多少天年假？", passages, "zh")
    assert answer.count(shared) == 1


def test_answers_stay_within_the_budget_but_always_quote_the_best_sentence() -> None:
    long = "A" * 700 + " refunds are issued within thirty days."
    passages = [
        PassageRef(1, "a.md", long, 0.9),
        PassageRef(2, "b.md", "Refunds need a receipt. Refunds are paid to the card.", 0.8),
    ]
    answer = compose_answer("when are refunds issued", passages, "en")
    assert answer.startswith(long)  # the best sentence alone is over the budget, and still quoted
    assert "receipt" not in answer


async def test_answer_is_produced_in_pieces() -> None:
    """The backend streams sentence parts; over gRPC, pieces that pile up may travel together."""
    settings = make_settings(backend="extractive")
    generator = Generator(settings, ExtractiveBackend(settings), PromptTemplates.load())
    request = GenerationRequest.from_pb(ask("When are refunds issued after a purchase?", EN_PASSAGES))
    pieces = [chunk.delta async for chunk in generator.generate(request) if chunk.delta]
    assert len(pieces) > 3
    assert "".join(pieces).startswith("Refunds are issued within 30 days of purchase. [2]")
