"""Settings: embedded defaults under data_dir, shared plain variables, fail-fast validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.config import CommonSettings
from services.ingest.config import IngestSettings


def test_defaults_live_under_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ZHIKU_CATALOG_URL", "ZHIKU_REDIS_URL", "ZHIKU_INGEST_CATALOG_URL", "ZHIKU_INGEST_REDIS_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = IngestSettings(common=CommonSettings(data_dir=tmp_path))
    assert settings.catalog_url == f"sqlite:///{tmp_path.resolve() / 'catalog.db'}"
    assert settings.blob_dir == tmp_path.resolve() / "blobs"
    assert settings.redis_url == ""
    assert (settings.grpc_port, settings.metrics_port, settings.worker_metrics_port) == (50054, 9104, 9105)
    assert (settings.chunk_size, settings.chunk_overlap) == (250, 50)
    assert (settings.embed_batch_size, settings.upsert_batch_size, settings.max_file_mb) == (64, 256, 100)


def test_plain_shared_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIKU_CATALOG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    monkeypatch.setenv("ZHIKU_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("ZHIKU_INGEST_QUEUE", "ingest-x")
    settings = IngestSettings()
    assert settings.catalog_url.startswith("postgresql+psycopg://")
    assert settings.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.queue == "ingest-x"
    assert not settings.is_sqlite


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"),
        ({"catalog_url": "mysql://x/y"}, "sqlite or postgresql"),
        ({"catalog_url": "not a url"}, "not a database URL"),
        ({"redis_url": "http://localhost"}, "redis://"),
        ({"queue": "bad queue"}, "queue name"),
        ({"embed_batch_size": 0}, "embed_batch_size"),
    ],
)
def test_bad_settings_fail_at_start(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IngestSettings(common=CommonSettings(data_dir=tmp_path), **overrides)
