"""The compose stack's monitoring: Prometheus config, scrape targets, Grafana provisioning.

No Docker engine runs here, so the compose model comes from the real compose binary
(``docker compose config``) and the Prometheus config is checked by the real ``promtool``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.embed.config import EmbedSettings
from services.generate.config import GenerateSettings
from services.ingest.config import IngestSettings
from services.retrieve.config import RetrieveSettings
from tests.ops.conftest import _tool

REPO = Path(__file__).resolve().parents[2]
COMPOSE_BIN = REPO / ".venv" / "bin" / "docker-compose"
PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"

# Compose service -> (settings class, field holding its metrics port); the gateway serves
# /metrics on its HTTP port instead.
METRICS_PORT_FIELDS: dict[str, tuple[type, str]] = {
    "embed": (EmbedSettings, "metrics_port"),
    "retrieve": (RetrieveSettings, "metrics_port"),
    "generate": (GenerateSettings, "metrics_port"),
    "ingest": (IngestSettings, "metrics_port"),
    "worker": (IngestSettings, "worker_metrics_port"),
}


def compose_model(tmp_path: Path) -> dict[str, Any]:
    """The resolved compose model with no .env (an empty env file stands for none)."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = subprocess.run(
        [
            str(COMPOSE_BIN),
            "-f",
            str(REPO / "docker-compose.yml"),
            "--env-file",
            str(empty),
            "--profile",
            "gpu",
            "config",
            "--format",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_model(tmp_path_factory.mktemp("compose"))


def scrape_targets(config: dict[str, Any]) -> dict[str, str]:
    """``host:port`` -> metrics path of every static target."""
    targets: dict[str, str] = {}
    for job in config["scrape_configs"]:
        for group in job.get("static_configs", []):
            for target in group["targets"]:
                targets[target] = job.get("metrics_path", "/metrics")
    return targets


def expected_targets(model: dict[str, Any]) -> dict[str, str]:
    """Every compose service that exposes metrics, at the port its settings give it."""
    services = model["services"]
    expected = {
        "gateway:" + str(services["gateway"]["environment"].get("ZHIKU_GATEWAY_PORT", 8000)): "/metrics"
    }
    for name, (cls, field) in METRICS_PORT_FIELDS.items():
        prefix = cls.model_config["env_prefix"]
        port = services[name]["environment"].get(f"{prefix}{field.upper()}", cls.model_fields[field].default)
        expected[f"{name}:{port}"] = "/metrics"
    return expected


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    return {v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"}


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    result = subprocess.run(
        [_tool("promtool"), "check", "config", str(PROM_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_every_service_exposing_metrics_is_a_scrape_target(model: dict[str, Any]) -> None:
    targets = scrape_targets(yaml.safe_load(PROM_CONFIG.read_text()))
    expected = expected_targets(model)
    missing = {t: p for t, p in expected.items() if targets.get(t) != p}
    assert not missing, f"compose services whose metrics Prometheus does not scrape: {missing}"
    for target in targets:
        host = target.split(":")[0]
        assert host == "localhost" or host in model["services"], f"{target} is no compose service"


def test_prometheus_service_mounts_config_and_rules_side_by_side(model: dict[str, Any]) -> None:
    prom = model["services"]["prometheus"]
    bound = mounts(prom)
    config_path = next(a for a in prom["command"] if a.startswith("--config.file="))
    in_container = config_path.split("=", 1)[1]
    assert bound[in_container] == PROM_CONFIG
    # rule_files are relative to the config file, in the container as here.
    for rule_file in yaml.safe_load(PROM_CONFIG.read_text())["rule_files"]:
        container_rules = str(Path(in_container).parent / rule_file)
        assert bound[container_rules] == PROM_CONFIG.parent / rule_file
        assert bound[container_rules].is_file()
    assert "healthcheck" in prom


def test_grafana_provisioning_is_well_formed_and_points_at_real_files(model: dict[str, Any]) -> None:
    grafana = model["services"]["grafana"]
    bound = mounts(grafana)
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert bound["/etc/grafana/provisioning/datasources"] == PROVISIONING / "datasources"

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "zhiku.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert bound["/etc/grafana/provisioning/dashboards"] == PROVISIONING / "dashboards"
    host_dir = bound[provider["options"]["path"]]
    dashboards = sorted(host_dir.glob("*.json"))
    assert {p.name for p in dashboards} >= {
        "zhiku-overview.json",
        "zhiku-ingestion.json",
        "zhiku-retrieval.json",
        "zhiku-generation.json",
    }
    for path in dashboards:
        assert json.loads(path.read_text())["uid"], path
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (host_dir / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_every_service_is_restarted_when_it_exits(model: dict[str, Any]) -> None:
    """As the local launcher and Kubernetes do: a process that dies (crash, OOM, kill -9) comes
    back by itself; only `docker compose stop`/`down` keeps it stopped. Every service here
    is long-running, so a one-shot job added later would have to opt out explicitly here."""
    policies = {name: service.get("restart", "no") for name, service in model["services"].items()}
    assert {name for name, policy in policies.items() if policy != "unless-stopped"} == set(), policies
