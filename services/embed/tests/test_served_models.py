"""Several models served at once (ZHIKU_EMBED_EXTRA_MODELS): the bundled USE model by
default and a TEI server as an extra, over real gRPC; requests name the model."""

from __future__ import annotations

import grpc
import pytest

from services.embed.config import EmbedSettings
from services.embed.tests.conftest import make_settings, running_embed
from services.embed.tests.fake_tei import FakeTei
from zhiku.v1 import embed_pb2


async def test_requests_name_their_model_and_unknown_models_are_invalid() -> None:
    with FakeTei() as tei:
        settings = make_settings(local_model="use", extra_models=tei.url)
        async with running_embed(settings) as stub:
            default = await stub.Embed(embed_pb2.EmbedRequest(texts=["年假有几天？"]), timeout=30)
            assert default.dimension == 512 and "universal-sentence-encoder" in default.model
            by_entry = await stub.Embed(
                embed_pb2.EmbedRequest(texts=["年假有几天？"], model=tei.url), timeout=30
            )
            assert (by_entry.model, by_entry.dimension) == ("fake/bge-tiny", 64)
            assert len(by_entry.vectors[0].values) == 64
            by_id = await stub.Embed(
                embed_pb2.EmbedRequest(texts=["q"], kind=embed_pb2.EMBED_KIND_QUERY, model="fake/bge-tiny"),
                timeout=30,
            )
            assert by_id.dimension == 64
            named_default = await stub.Embed(embed_pb2.EmbedRequest(texts=["q"], model="use"), timeout=30)
            assert named_default.dimension == 512

            info = await stub.Info(embed_pb2.EmbedInfoRequest(model="fake/bge-tiny"), timeout=10)
            assert (info.backend, info.model, info.dimension) == ("tei", "fake/bge-tiny", 64)
            assert list(info.models) == [default.model, "fake/bge-tiny"]

            for call in (
                stub.Embed(embed_pb2.EmbedRequest(texts=["q"], model="e5"), timeout=10),
                stub.Info(embed_pb2.EmbedInfoRequest(model="no-such-model"), timeout=10),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert "is not served by this embed service" in (caught.value.details() or "")
                assert "ZHIKU_EMBED_EXTRA_MODELS" in (caught.value.details() or "")


def test_extra_models_accept_bundled_names_and_urls_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZHIKU_EMBED_EXTRA_MODELS", "e5, http://tei:80/")
    settings = EmbedSettings()
    assert settings.extra_models == ["e5", "http://tei:80"]
    (_, e5), (_, tei) = settings.extra_model_settings()
    assert (e5.backend, e5.local_model) == ("local", "e5")
    assert (tei.backend, tei.tei_url) == ("tei", "http://tei:80")
    monkeypatch.setenv("ZHIKU_EMBED_EXTRA_MODELS", '["use"]')
    assert EmbedSettings().extra_models == ["use"]
    monkeypatch.setenv("ZHIKU_EMBED_EXTRA_MODELS", "bge-m3")
    with pytest.raises(ValueError, match="neither a bundled model"):
        EmbedSettings()
