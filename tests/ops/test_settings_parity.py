"""Every setting a service reads from the environment is settable in compose and in the chart.

The settings are found by introspecting the pydantic Settings classes in ``services/*/config.py``
(env name = prefix + field name upper-cased, or the field's ``ZHIKU_*`` validation aliases;
nested :class:`CommonSettings` under its own ``ZHIKU_`` prefix). A new Settings class without an
entry in ``READERS`` fails the test, and a new field must reach the right container:

* compose: set explicitly in the service's ``environment``, or passed from ``.env`` through the
  ``env_file`` (``required: false``) every Zhiku service has; proved by the real compose binary
  resolving a copy of docker-compose.yml next to a .env that sets every variable;
* chart: an explicit env entry / ConfigMap / Secret key, or the generic ``<component>.extraEnv``
  (and ``config.extraEnv``), proved by ``helm template`` showing the value in that Deployment.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import services
from services.common.config import CommonSettings, ServiceSettings
from services.embed.config import EmbedSettings
from services.gateway.config import GatewaySettings
from services.generate.config import GenerateSettings
from services.ingest.config import IngestSettings
from services.retrieve.config import RetrieveSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_BIN = REPO / ".venv" / "bin" / "docker-compose"
HELM = REPO / "tools" / "bin" / "helm"
CHART = REPO / "deploy" / "helm" / "zhiku"

# Settings class -> the components (compose services and chart Deployments alike) that read it.
READERS: dict[type[BaseSettings], tuple[str, ...]] = {
    EmbedSettings: ("embed",),
    RetrieveSettings: ("retrieve",),
    GenerateSettings: ("generate",),
    IngestSettings: ("ingest", "worker"),
    GatewaySettings: ("gateway",),
}
# Building blocks, read only through the classes above (CommonSettings as their ``common``).
BASES = {CommonSettings, ServiceSettings}


def nested_settings(cls: type[BaseSettings]) -> set[type[BaseSettings]]:
    """Settings classes ``cls`` holds as fields (GatewaySettings' ``oidc``): read through it."""
    found: set[type[BaseSettings]] = set()
    for field in cls.model_fields.values():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            found |= {annotation, *nested_settings(annotation)}
    return found


def discovered_settings() -> set[type[BaseSettings]]:
    """Every BaseSettings subclass defined in a ``services.<name>.config`` module, less those
    only read as a field of another (their variables count as that class's, see env_names)."""
    found: set[type[BaseSettings]] = set()
    for info in pkgutil.iter_modules(services.__path__):
        try:
            module = importlib.import_module(f"services.{info.name}.config")
        except ModuleNotFoundError:
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.__module__ == module.__name__
            ):
                found.add(value)
    nested = set().union(*(nested_settings(cls) for cls in found))
    return found - BASES - nested


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variable names pydantic-settings reads for ``cls`` (nested included)."""
    prefix = cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            names |= env_names(annotation)  # its own default_factory reads its own prefix
            continue
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str) and c.startswith("ZHIKU_")}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def component_vars() -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for cls, components in READERS.items():
        for component in components:
            wanted.setdefault(component, set()).update(env_names(cls))
    return wanted


def test_every_settings_class_has_known_readers() -> None:
    assert discovered_settings() == set(READERS), "add the new Settings class to READERS"
    names = component_vars()
    # The introspection sees prefixes, nested common settings and aliases.
    assert {"ZHIKU_EMBED_TEI_URL", "ZHIKU_OTEL_ENDPOINT", "ZHIKU_DATA_DIR"} <= names["embed"]
    assert {"ZHIKU_CATALOG_URL", "ZHIKU_INGEST_CATALOG_URL", "ZHIKU_REDIS_URL"} <= names["worker"]
    assert "ZHIKU_INGEST_CATALOG_URL" not in names["gateway"]
    assert {"ZHIKU_GATEWAY_OIDC_ISSUER", "ZHIKU_GATEWAY_OIDC_STATE_SECRET"} <= names["gateway"]


def test_every_setting_is_settable_in_compose(tmp_path: Path) -> None:
    wanted = component_vars()
    every = sorted(set().union(*wanted.values()))
    shutil.copy(REPO / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text("".join(f"{name}=parity-{name.lower()}\n" for name in every))
    out = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(tmp_path / "docker-compose.yml"), "config", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    model = json.loads(out.stdout)
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    unreachable: dict[str, list[str]] = {}
    for component, names in wanted.items():
        env = model["services"][component].get("environment", {})
        explicit = set(raw["x-zhiku-env"]) | set(raw["services"][component].get("environment") or {})
        missing = [
            n
            for n in sorted(names)
            if n not in env or (n not in explicit and env[n] != f"parity-{n.lower()}")
        ]
        if missing:
            unreachable[component] = missing
    assert not unreachable, f"settings compose cannot set: {unreachable}"


def helm_template(*args: str) -> list[dict[str, Any]]:
    if not HELM.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "install-helm.sh")], check=True)
    out = subprocess.run(
        [str(HELM), "template", "zhiku", str(CHART), "--namespace", "zhiku", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """component -> its main container."""
    found = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            found[component] = doc["spec"]["template"]["spec"]["containers"][0]
    return found


def shared_env(docs: list[dict[str, Any]]) -> tuple[str, set[str], str, set[str]]:
    """(ConfigMap name, its keys, Secret name, its keys) loaded by every pod with envFrom."""
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "ZHIKU_LOG_LEVEL" in (d.get("data") or {}))
    secret = next(d for d in docs if d["kind"] == "Secret")
    return cm["metadata"]["name"], set(cm["data"]), secret["metadata"]["name"], set(secret.get("data") or {})


@pytest.fixture(scope="module")
def extra_env_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict]:
    """A render whose per-component extraEnv sets every variable not set explicitly by default."""
    docs = helm_template(
        "--set",
        "config.catalogUrl=postgresql+psycopg://u:p@pg/zhiku",
        "--set",
        "config.redisUrl=redis://r:6379/0",
    )
    cm_name, cm_keys, secret_name, secret_keys = shared_env(docs)
    containers = deployments(docs)
    values: dict[str, Any] = {}
    expected: dict[str, dict[str, str]] = {}
    for component, names in component_vars().items():
        container = containers[component]
        sources = {
            ref.get("configMapRef", ref.get("secretRef", {})).get("name") for ref in container["envFrom"]
        }
        assert {cm_name, secret_name} <= sources, f"{component} does not load the shared ConfigMap and Secret"
        explicit = {e["name"] for e in container.get("env", [])} | cm_keys | secret_keys
        rest = {n: f"parity-{component}-{n.lower()}" for n in sorted(names - explicit)}
        expected[component] = rest
        values[component] = {"extraEnv": [{"name": n, "value": v} for n, v in rest.items()]}
    values_file = tmp_path_factory.mktemp("helm") / "parity.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return helm_template("-f", str(values_file)), expected


def test_every_setting_is_settable_in_the_chart(extra_env_render: tuple[list[dict[str, Any]], dict]) -> None:
    docs, expected = extra_env_render
    containers = deployments(docs)
    unreachable: dict[str, list[str]] = {}
    for component, wanted in expected.items():
        env = {e["name"]: e.get("value") for e in containers[component].get("env", [])}
        missing = [n for n, v in wanted.items() if env.get(n) != v]
        if missing:
            unreachable[component] = missing
        # A variable set for one component arrives in that Deployment only.
        for other, container in containers.items():
            if other != component:
                names = {e["name"]: e.get("value") for e in container.get("env", [])}
                assert not any(names.get(n) == v for n, v in wanted.items()), (component, other)
    assert not unreachable, f"settings the chart's extraEnv did not deliver: {unreachable}"
    assert expected["gateway"], "the parity render should exercise extraEnv"


def test_config_extra_env_reaches_every_component() -> None:
    docs = helm_template("--set", "config.extraEnv.ZHIKU_OTEL_ENDPOINT=http://collector:4318/v1/traces")
    cm_name, _, _, _ = shared_env(docs)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    assert cm["data"]["ZHIKU_OTEL_ENDPOINT"] == "http://collector:4318/v1/traces"
    containers = deployments(docs)
    assert set(component_vars()) <= set(containers)
    for component, container in containers.items():
        refs = {ref.get("configMapRef", {}).get("name") for ref in container["envFrom"]}
        assert cm_name in refs, component
