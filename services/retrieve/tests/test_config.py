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
    assert (settings.qdrant_layout, settings.qdrant_write_ordering) == ("per_collection", "strong")
    assert settings.qdrant_quantization == "none"


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
        ({"qdrant_layout": "per_tenant"}, "qdrant_layout"),
        ({"qdrant_write_consistency_factor": 2}, "must not exceed qdrant_replication_factor"),
        ({"qdrant_replication_factor": 2, "qdrant_write_consistency_factor": 3}, "must not exceed"),
        ({"qdrant_shared_collection": "shared"}, "valid knowledge base name"),
        ({"qdrant_shared_collection": "zhiku/shared"}, "not a usable Qdrant collection name"),
        ({"qdrant_quantization": "int4"}, "qdrant_quantization"),
        ({"qdrant_quantization_quantile": 0.2}, "qdrant_quantization_quantile"),
        ({"qdrant_quantization_oversampling": 0.5}, "qdrant_quantization_oversampling"),
        ({"qdrant_write_ordering": "eventual"}, "qdrant_write_ordering"),
        ({"qdrant_read_consistency": "one"}, "qdrant_read_consistency"),
        ({"qdrant_retry_attempts": 0}, "qdrant_retry_attempts"),
    ],
)
def test_bad_settings_fail_fast(fields: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        RetrieveSettings(**{"qdrant_url": None, "qdrant_path": None, **fields})
