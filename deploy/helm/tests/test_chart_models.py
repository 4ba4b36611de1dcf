"""Several models in the chart: named models inside the generate Deployment (generate.models),
one more generate Deployment per model (generate.modelDeployments) with the gateway told which
address serves which model, and the rewrite model routed to whichever serves it. The rendered
environment is read back through the services' own Settings classes, so the chart and the code
agree on names and formats."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import HELM, ROOT, container, deployments, is_config, render, run_helm

from services.gateway.config import GatewaySettings
from services.generate.config import GenerateSettings

MODELS = {
    "generate": {
        "models": {
            "fast": {
                "backend": "openai",
                "openai_base_url": "http://small:8000/v1",
                "openai_model": "Qwen2.5-1.5B-Instruct",
                "openai_api_key": "sk-fast",
            }
        },
        "rewriteModel": "tiny",
        "modelDeployments": [
            {
                "name": "Qwen/Qwen2.5-72B",
                "values": {
                    "backend": "vllm",
                    "model": "Qwen/Qwen2.5-72B-Instruct",
                    "gpu": {"enabled": True},
                    "vllm": {"tensorParallelSize": 4},
                    "replicaCount": 2,
                    "modelCache": {"persistent": True},
                },
            },
            {
                "name": "tiny",
                "values": {
                    "backend": "openai",
                    "model": "gpt-4o-mini",
                    "openai": {"baseUrl": "https://api.openai.com/v1", "apiKey": "sk-online"},
                },
                "settings": {"openai_context_window": 128000, "query_rewrite": "llm"},
            },
        ],
    },
    "podDisruptionBudget": {"enabled": True},
    "serviceMonitor": {"enabled": True},
}
BIG, TINY = "generate-qwen-qwen2-5-72b", "generate-tiny"


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")], check=True, cwd=ROOT)
    return HELM


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


@pytest.fixture
def docs(helm: Path, tmp_path: Path) -> list[dict[str, Any]]:
    return render(helm, "-f", values_file(tmp_path, MODELS))


def config_and_secret(docs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    (config,) = [d for d in docs if is_config(d)]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    return config["data"], {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def environment(docs: list[dict[str, Any]], component: str) -> dict[str, str]:
    """What a pod's process sees: ConfigMap and Secret (envFrom), then its own env over them."""
    config, secret = config_and_secret(docs)
    env = {**config, **secret}
    for item in container(deployments(docs)[component]).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
    return env


def settings_in(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, kind: type[Any]) -> Any:
    for name in list(os.environ):
        if name.startswith("ZHIKU_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return kind()


def test_each_model_deployment_gets_its_pod_service_and_policies(docs: list[dict[str, Any]]) -> None:
    deps = deployments(docs)
    assert {"generate", BIG, TINY} <= set(deps)
    big, tiny = deps[BIG], deps[TINY]
    assert big["metadata"]["name"] == f"zhiku-{BIG}" and big["spec"]["replicas"] == 2
    assert container(big)["resources"]["limits"]["nvidia.com/gpu"] == 4  # its own tensor parallelism
    assert container(big)["image"].startswith("zhiku/generate-cuda")
    assert "nvidia.com/gpu" not in container(tiny)["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in container(deps["generate"])["resources"].get("limits", {})
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert {f"zhiku-{BIG}", f"zhiku-{TINY}"} <= services
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert f"zhiku-{BIG}-cache" in claims and "zhiku-generate-cache" not in claims
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    grpc_rule = policies[f"zhiku-{TINY}"]["spec"]["ingress"][0]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in grpc_rule["from"]] == [
        "gateway"
    ]
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert f"zhiku-{BIG}" in budgets and f"zhiku-{TINY}" not in budgets  # two pods against one
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    relabel = monitors[f"zhiku-{TINY}"]["spec"]["endpoints"][0]["relabelings"][0]
    assert relabel["replacement"] == "zhiku-generate"  # the alert rules' job name


def test_the_gateway_learns_which_address_serves_which_model(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = settings_in(environment(docs, "gateway"), monkeypatch, GatewaySettings)
    assert gateway.generate_model_addrs == {
        "Qwen/Qwen2.5-72B": f"zhiku-{BIG}:50053",
        "tiny": f"zhiku-{TINY}:50053",
    }
    assert gateway.rewrite_model == "tiny"  # served by a Deployment of its own: the gateway routes it
    assert gateway.common.generate_addr == "zhiku-generate:50053"


def test_each_generate_pod_serves_what_it_is_told(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    main = settings_in(environment(docs, "generate"), monkeypatch, GenerateSettings)
    assert main.backend == "extractive" and list(main.named_models) == ["fast"]
    assert main.named_models["fast"].openai_api_key.get_secret_value() == "sk-fast"
    assert main.rewrite_model == ""  # tiny is not served here

    tiny = settings_in(environment(docs, TINY), monkeypatch, GenerateSettings)
    assert (tiny.served_model_name, tiny.backend, tiny.openai_model) == ("tiny", "openai", "gpt-4o-mini")
    assert tiny.openai_base_url == "https://api.openai.com/v1"
    assert tiny.openai_api_key.get_secret_value() == "sk-online"
    assert (tiny.openai_context_window, tiny.query_rewrite) == (128000, "llm")
    assert tiny.named_models == {}  # the main Deployment's named models are not served twice

    env = environment(docs, BIG)
    assert env["ZHIKU_GENERATE_SERVED_MODEL_NAME"] == "Qwen/Qwen2.5-72B"
    assert env["ZHIKU_GENERATE_BACKEND"] == "vllm"
    assert env["ZHIKU_GENERATE_VLLM_MODEL"] == "Qwen/Qwen2.5-72B-Instruct"
    assert env["ZHIKU_GENERATE_VLLM_TENSOR_PARALLEL_SIZE"] == "4"


def test_keys_stay_out_of_the_configmap(docs: list[dict[str, Any]]) -> None:
    _, secret = config_and_secret(docs)
    assert json.loads(secret["ZHIKU_GENERATE_MODELS"])["fast"]["openai_api_key"] == "sk-fast"
    assert secret["ZHIKU_GENERATE_OPENAI_API_KEY_TINY"] == "sk-online"
    rendered = json.dumps([d for d in docs if d["kind"] != "Secret"])
    assert "sk-fast" not in rendered and "sk-online" not in rendered


def test_a_rewrite_model_inside_the_generate_deployment_is_its_setting(helm: Path, tmp_path: Path) -> None:
    values = {"generate": {**MODELS["generate"], "rewriteModel": "fast"}}  # type: ignore[dict-item]
    config, _ = config_and_secret(render(helm, "-f", values_file(tmp_path, values)))
    assert config["ZHIKU_GENERATE_REWRITE_MODEL"] == "fast"
    assert "ZHIKU_GATEWAY_REWRITE_MODEL" not in config


def test_no_models_render_as_before(helm: Path) -> None:
    config, _ = config_and_secret(render(helm, "--set", "gateway.apiKeys={a}"))
    added = ("GENERATE_MODEL_ADDRS", "REWRITE_MODEL", "GENERATE_MODELS")
    assert not any(name.endswith(added) for name in config)
    assert {d for d in deployments(render(helm)) if d.startswith("generate")} == {"generate"}


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([{"name": "a b"}], "name is the model name requests use"),
        ([{"name": "fast"}], "the name is taken"),
        ([{"name": "kb:docs"}], "the name is taken"),
        ([{"name": "Qwen.7B"}, {"name": "qwen-7b"}], "like another's"),
        ([{"name": "big", "values": {"backend": "vllm"}}], "set values.gpu.enabled=true"),
        ([{"name": "api", "values": {"backend": "openai"}}], "needs values.model"),
        ([{"name": "x", "replicas": 2}], "schema"),
    ],
)
def test_bad_model_deployments_fail_the_render(
    helm: Path, tmp_path: Path, entries: list[dict[str, Any]], fragment: str
) -> None:
    values = {"generate": {"models": {"fast": {"backend": "extractive"}}, "modelDeployments": entries}}
    result = run_helm(helm, "-f", values_file(tmp_path, values))
    assert result.returncode != 0
    assert fragment in result.stderr
