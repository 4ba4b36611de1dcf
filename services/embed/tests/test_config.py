from typing import get_args

import pytest
from pydantic import ValidationError

from services.embed.backends import BACKENDS
from services.embed.config import BackendName, EmbedSettings, LocalModelName
from services.embed.models import LOCAL_MODELS


def test_defaults_run_embedded_on_the_agreed_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKEND", "LOCAL_MODEL", "GRPC_PORT", "METRICS_PORT"):
        monkeypatch.delenv(f"ZHIKU_EMBED_{name}", raising=False)
    settings = EmbedSettings()
    assert (settings.backend, settings.local_model) == ("local", "e5")
    assert (settings.grpc_port, settings.metrics_port) == (50051, 9101)


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIKU_EMBED_LOCAL_MODEL", "use")
    monkeypatch.setenv("ZHIKU_EMBED_BATCH_SIZE", "4")
    settings = EmbedSettings()
    assert (settings.local_model, settings.batch_size) == ("use", 4)


def test_tei_needs_a_url() -> None:
    with pytest.raises(ValidationError, match="ZHIKU_EMBED_TEI_URL is required"):
        EmbedSettings(backend="tei")


def test_tei_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="must start with http"):
        EmbedSettings(backend="tei", tei_url="tei:8080")
    assert EmbedSettings(backend="tei", tei_url="http://tei:8080/").tei_url == "http://tei:8080"


def test_unknown_backend_and_model_are_refused() -> None:
    with pytest.raises(ValidationError):
        EmbedSettings(backend="openai-ish")  # type: ignore[arg-type]  # the invalid value under test
    with pytest.raises(ValidationError):
        EmbedSettings(local_model="bert")  # type: ignore[arg-type]  # the invalid value under test


def test_batch_size_cannot_exceed_the_call_limit() -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        EmbedSettings(batch_size=64, max_texts_per_call=32)


def test_registries_cover_exactly_the_configurable_names() -> None:
    assert set(BACKENDS) == set(get_args(BackendName))
    assert set(LOCAL_MODELS) == set(get_args(LocalModelName))
