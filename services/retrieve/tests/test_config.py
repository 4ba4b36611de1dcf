from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.config import CommonSettings
from services.retrieve.config import RetrieveSettings


def test_defaults_work_embedded(tmp_path: Path) -> None:
    settings = RetrieveSettings(common=CommonSettings(data_dir=tmp_path))
    assert (settings.backend, settings.grpc_port, settings.metrics_port) == ("edge", 50052, 9102)
    assert settings.shard_root == tmp_path / "vectors"
    assert settings.qdrant_prefer_grpc


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZHIKU_RETRIEVE_BACKEND", "qdrant")
    monkeypatch.setenv("ZHIKU_RETRIEVE_QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("ZHIKU_RETRIEVE_EDGE_DIR", str(tmp_path / "shards"))
    settings = RetrieveSettings()
    assert (settings.backend, settings.qdrant_url) == ("qdrant", "http://qdrant:6333")
    assert settings.shard_root == tmp_path / "shards"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"backend": "faiss"}, "unknown retrieve backend"),
        ({"backend": "qdrant"}, "exactly one of qdrant_url"),
        ({"backend": "qdrant", "qdrant_url": "http://q:6333", "qdrant_path": "/tmp/q"}, "exactly one"),
        ({"default_top_k": 50, "max_top_k": 10}, "default_top_k"),
        ({"edge_workers": 0}, "edge_workers"),
    ],
)
def test_bad_settings_fail_fast(fields: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        RetrieveSettings(**{"qdrant_url": None, "qdrant_path": None, **fields})
