"""Looping models are cut short: the guard alone, and a scripted looping model over gRPC."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.generate.repetition import RepetitionGuard
from services.generate.tests.conftest import Serve, ask, collect
from testing.fake_openai import FakeOpenAI, running

from .test_openai_backend import openai_settings


def guarded(pieces: list[str]) -> tuple[str, bool]:
    guard = RepetitionGuard()
    out = "".join(guard.feed(piece) for piece in pieces)
    return out + guard.flush(), guard.stopped


def test_a_repeated_sentence_ends_the_answer_and_is_never_sent() -> None:
    text, stopped = guarded(
        ["# AutoGen: Building", " Agents\n", "AutoGen is a framework.\n"]
        + ["# AutoGen: Building Agents\n"] * 30
    )
    assert stopped
    assert text == "# AutoGen: Building Agents\nAutoGen is a framework.\n"


def test_the_first_sentence_streams_at_once_and_later_ones_once_they_differ() -> None:
    guard = RepetitionGuard()
    assert guard.feed("Refunds take") == "Refunds take"  # nothing said yet: nothing to repeat
    assert guard.feed(" 30 days. ") == " 30 days. "
    assert guard.feed("Refunds") == ""  # could be the same sentence again: held back
    assert guard.feed(" need a receipt") == "Refunds need a receipt"  # differs: released
    assert guard.feed(".") == "."
    assert not guard.stopped


def test_a_phrase_looping_inside_a_sentence_ends_it() -> None:
    text, stopped = guarded(["# AutoGen: Building"] + [" and Building"] * 40)
    assert stopped and text.count("and Building") < 8


def test_chinese_sentences_and_citations() -> None:
    text, stopped = guarded(
        ["员工每年享有十五天年假。[1]", "病假需要证明。[2]", "员工每年享有十五天年假。[2]"]
    )
    assert stopped and text.count("十五天") == 1
    text, stopped = guarded(["是。", "是。", "对的。"])  # short sentences may honestly recur
    assert not stopped and text == "是。是。对的。"


async def test_a_looping_model_is_cut_over_grpc(serve: Serve) -> None:
    before = REGISTRY.get_sample_value("zhiku_generate_repetitions_cut_total", {"backend": "openai"}) or 0
    heading = ["# ", "AutoGen: ", "Building ", "and ", "Building\n"]
    async with running(FakeOpenAI(heading * 30)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        deltas, final = await collect(stub.Generate(ask("What is AutoGen?", max_tokens=400)))
    answer = "".join(deltas)
    assert answer == "# AutoGen: Building and Building\n"
    assert final.finish_reason == "stop"
    after = REGISTRY.get_sample_value("zhiku_generate_repetitions_cut_total", {"backend": "openai"})
    assert after == before + 1
