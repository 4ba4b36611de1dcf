"""Unit tests of the Helm chart deploy/helm/zhiku: render with `helm template`, assert on the objects.

helm is the static binary that scripts/install-helm.sh puts in tools/bin/helm; the fixture
installs it when missing, so these tests never skip.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "zhiku"
VALUES = CHART / "values.yaml"
VALUES_GPU = CHART / "values-gpu.yaml"
SCHEMA = CHART / "values.schema.json"
HELM = ROOT / "tools" / "bin" / "helm"

GRPC_COMPONENTS = {"embed": 50051, "retrieve": 50052, "generate": 50053, "ingest": 50054}
ALL_COMPONENTS = {*GRPC_COMPONENTS, "worker", "gateway"}
GPU = "nvidia.com/gpu"
SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")], check=True, cwd=ROOT)
    return HELM


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), "template", "zhiku", str(CHART), "--namespace", "zhiku", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "Deployment"
    }


def is_config(doc: dict[str, Any]) -> bool:
    """The chart's environment ConfigMap (not a Grafana dashboard ConfigMap)."""
    return doc["kind"] == "ConfigMap" and "grafana_dashboard" not in doc["metadata"]["labels"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def gpu_values(*extra: str) -> tuple[str, ...]:
    return ("-f", str(VALUES_GPU), *extra)


# ------------------------------------------------------------------------------------------ shape


def test_default_render_has_every_component(helm: Path) -> None:
    docs = render(helm)
    assert set(deployments(docs)) == ALL_COMPONENTS
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert services == {f"zhiku-{c}" for c in (*GRPC_COMPONENTS, "gateway")}
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Secret", "PersistentVolumeClaim", "ServiceAccount"} <= kinds


@pytest.mark.parametrize("values", [(), gpu_values()], ids=["default", "gpu"])
def test_every_deployment_has_probes_and_resources(helm: Path, values: tuple[str, ...]) -> None:
    for name, deployment in deployments(render(helm, *values)).items():
        c = container(deployment)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in c, f"{name}: no {probe}"
        resources = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}: resources.{kind}"


def test_grpc_services_use_grpc_probes_on_their_port(helm: Path) -> None:
    deps = deployments(render(helm))
    for name, port in GRPC_COMPONENTS.items():
        c = container(deps[name])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == port, f"{name}.{probe}"
        assert {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"] == port
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env[f"ZHIKU_{name.upper()}_GRPC_PORT"] == str(port)


def test_gateway_probes_healthz_and_readyz(helm: Path) -> None:
    c = container(deployments(render(helm))["gateway"])
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["ports"][0]["containerPort"] == 8000


def test_worker_probe_follows_the_broker(helm: Path) -> None:
    embedded = container(deployments(render(helm))["worker"])
    assert "/metrics" in " ".join(embedded["livenessProbe"]["exec"]["command"])
    redis = container(deployments(render(helm, "--set", "config.redisUrl=redis://redis:6379/0"))["worker"])
    command = " ".join(redis["livenessProbe"]["exec"]["command"])
    assert "celery -A services.ingest.worker.celery_app inspect ping" in command
    assert redis["command"] == ["celery"]
    assert redis["args"][:3] == ["-A", "services.ingest.worker.celery_app", "worker"]
    assert "--pool=threads" in redis["args"]


def test_selectors_exclude_user_labels(helm: Path) -> None:
    docs = render(helm, "--set", "commonLabels.team=search", "--set", "embed.podLabels.canary=yes")
    for name, deployment in deployments(docs).items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert set(selector) == SELECTOR_KEYS, name
        assert selector["app.kubernetes.io/component"] == name
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["team"] == "search"
        assert selector.items() <= pod_labels.items()
    assert deployments(docs)["embed"]["spec"]["template"]["metadata"]["labels"]["canary"] == "yes"
    for service in (d for d in docs if d["kind"] == "Service"):
        assert set(service["spec"]["selector"]) == SELECTOR_KEYS


def test_pods_run_as_non_root_uid_10001(helm: Path) -> None:
    for name, deployment in deployments(render(helm)).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_configmap_points_clients_at_the_services(helm: Path) -> None:
    (config,) = [d for d in render(helm) if is_config(d)]
    data = config["data"]
    for name, port in GRPC_COMPONENTS.items():
        assert data[f"ZHIKU_{name.upper()}_ADDR"] == f"zhiku-{name}:{port}"
    assert data["ZHIKU_DATA_DIR"] == "/data"


def test_secrets_hold_keys_and_urls(helm: Path) -> None:
    docs = render(
        helm,
        "--set",
        "generate.openai.apiKey=sk-1",
        "--set",
        "config.catalogUrl=postgresql+psycopg://u:p@pg:5432/z",
        "--set",
        "gateway.apiKeys={a,b}",
    )
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data == {
        "ZHIKU_GENERATE_OPENAI_API_KEY": "sk-1",
        "ZHIKU_CATALOG_URL": "postgresql+psycopg://u:p@pg:5432/z",
        # GatewaySettings.api_keys splits on commas.
        "ZHIKU_GATEWAY_API_KEYS": "a,b",
    }
    (config,) = [d for d in docs if is_config(d)]
    assert "sk-1" not in json.dumps(config)
    existing = render(helm, "--set", "secrets.existingSecret=mine")
    assert not [d for d in existing if d["kind"] == "Secret"]
    for deployment in deployments(existing).values():
        refs = [e.get("secretRef", {}).get("name") for e in container(deployment)["envFrom"]]
        assert "mine" in refs


def test_generate_model_reaches_the_backends(helm: Path) -> None:
    docs = render(
        helm,
        "--set",
        "generate.backend=openai",
        "--set",
        "generate.openai.baseUrl=http://vllm:8000/v1",
        "--set",
        "generate.model=Qwen/Qwen2.5-7B-Instruct",
    )
    (config,) = [d for d in docs if is_config(d)]
    assert config["data"]["ZHIKU_GENERATE_BACKEND"] == "openai"
    assert config["data"]["ZHIKU_GENERATE_OPENAI_MODEL"] == "Qwen/Qwen2.5-7B-Instruct"
    assert config["data"]["ZHIKU_GENERATE_OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    no_model = run_helm(
        helm, "--set", "generate.backend=openai", "--set", "generate.openai.baseUrl=http://x/v1"
    )
    assert no_model.returncode != 0
    assert "generate.model" in no_model.stderr


# ------------------------------------------------------------------------------------------ GPU


def test_default_values_request_no_gpu(helm: Path) -> None:
    docs = render(helm)
    assert GPU not in json.dumps(docs).replace("nvidia.com/gpu.present", "")
    generate = deployments(docs)["generate"]
    pod = generate["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod
    assert "nodeSelector" not in pod
    assert container(generate)["image"].startswith("zhiku/generate:")


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_gpu_limit_equals_tensor_parallel_size(helm: Path, tp: int) -> None:
    docs = render(helm, *gpu_values("--set", f"generate.vllm.tensorParallelSize={tp}"))
    deps = deployments(docs)
    c = container(deps["generate"])
    assert int(c["resources"]["limits"][GPU]) == tp
    assert int(c["resources"].get("requests", {}).get(GPU, tp)) == tp
    (config,) = [d for d in docs if is_config(d)]
    assert config["data"]["ZHIKU_GENERATE_VLLM_TENSOR_PARALLEL_SIZE"] == str(tp)
    for name, deployment in deps.items():
        if name != "generate":
            assert GPU not in json.dumps(deployment), name


def test_vllm_values_become_the_engine_arguments(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chart values -> ConfigMap -> GenerateSettings -> AsyncEngineArgs, with the GPU limit
    equal to the engine's tensor_parallel_size."""
    from services.generate.backends.vllm_engine import engine_kwargs
    from services.generate.config import GenerateSettings

    docs = render(
        helm,
        *gpu_values(
            *("--set", "generate.vllm.tensorParallelSize=4", "--set", "generate.vllm.dtype=float16"),
            *("--set", "generate.vllm.quantization=awq", "--set", "generate.vllm.maxNumSeqs=64"),
            *("--set", "generate.vllm.enablePrefixCaching=false", "--set", "generate.vllm.maxModelLen=16384"),
        ),
    )
    (config,) = [d for d in docs if is_config(d)]
    for name, value in config["data"].items():
        if name.startswith("ZHIKU_GENERATE_"):
            monkeypatch.setenv(name, value)
    kwargs = engine_kwargs(GenerateSettings())
    assert {k: kwargs[k] for k in ("tensor_parallel_size", "dtype", "quantization", "max_num_seqs")} == {
        "tensor_parallel_size": 4,
        "dtype": "float16",
        "quantization": "awq",
        "max_num_seqs": 64,
    }
    assert kwargs["enable_prefix_caching"] is False and kwargs["max_model_len"] == 16384
    assert kwargs["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert int(container(deployments(docs)["generate"])["resources"]["limits"][GPU]) == 4


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_dev_shm_mounted_only_when_tensor_parallel(helm: Path, tp: int) -> None:
    docs = render(helm, *gpu_values("--set", f"generate.vllm.tensorParallelSize={tp}"))
    generate = deployments(docs)["generate"]
    mounts = {m["mountPath"]: m["name"] for m in container(generate)["volumeMounts"]}
    volumes = {v["name"]: v for v in generate["spec"]["template"]["spec"]["volumes"]}
    if tp > 1:
        assert "/dev/shm" in mounts
        shm = volumes[mounts["/dev/shm"]]
        assert shm["emptyDir"]["medium"] == "Memory"
    else:
        assert "/dev/shm" not in mounts
        assert not any(v.get("emptyDir", {}).get("medium") == "Memory" for v in volumes.values())


def test_gpu_values_schedule_onto_gpu_nodes(helm: Path) -> None:
    docs = render(helm, *gpu_values("--set", "generate.gpu.runtimeClassName=nvidia"))
    generate = deployments(docs)["generate"]
    pod = generate["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    c = container(generate)
    assert c["image"].startswith("zhiku/generate-cuda:")
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 1200
    assert generate["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    without_class = deployments(render(helm, *gpu_values()))["generate"]["spec"]["template"]["spec"]
    assert "runtimeClassName" not in without_class


def test_vllm_without_gpu_is_refused(helm: Path) -> None:
    result = run_helm(helm, "--set", "generate.backend=vllm")
    assert result.returncode != 0
    assert "generate.gpu.enabled" in result.stderr


# ------------------------------------------------------------------------------------------ storage


def test_embedded_backends_get_volumes(helm: Path) -> None:
    docs = render(helm)
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {"zhiku-data", "zhiku-retrieve"}
    deps = deployments(docs)
    retrieve = deps["retrieve"]
    assert retrieve["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in retrieve["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "zhiku-retrieve"
    for name in ("ingest", "worker"):
        volumes = {v["name"]: v for v in deps[name]["spec"]["template"]["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "zhiku-data", name
    # ReadWriteOnce: the worker follows ingest onto its node.
    affinity = deps["worker"]["spec"]["template"]["spec"]["affinity"]["podAffinity"]
    term = affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ingest"
    # With the embedded SQLite catalog the gateway's tables (keys, conversations) live on the
    # data volume too, so it mounts the claim and follows ingest like the worker.
    gateway = deps["gateway"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in gateway["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "zhiku-data"
    term = gateway["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ingest"


def test_gateway_with_a_catalog_url_is_stateless(helm: Path) -> None:
    docs = render(helm, "--set", "config.catalogUrl=postgresql+psycopg://zhiku@db/zhiku")
    gateway = deployments(docs)["gateway"]["spec"]["template"]["spec"]
    assert "affinity" not in gateway
    assert not any("persistentVolumeClaim" in v for v in gateway["volumes"])


def test_server_backends_need_no_retrieve_volume(helm: Path) -> None:
    docs = render(
        helm,
        "--set",
        "retrieve.backend=qdrant",
        "--set",
        "retrieve.qdrant.url=http://qdrant:6333",
        "--set",
        "retrieve.replicaCount=3",
        "--set",
        "persistence.accessModes[0]=ReadWriteMany",
    )
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {"zhiku-data"}
    deps = deployments(docs)
    assert deps["retrieve"]["spec"]["replicas"] == 3
    assert "affinity" not in deps["worker"]["spec"]["template"]["spec"]
    assert run_helm(helm, "--set", "retrieve.replicaCount=2").returncode != 0


# ------------------------------------------------------------------------------------------ values


@pytest.mark.parametrize(
    "override",
    [
        "generate.vllm.tensorParallelSize=two",
        "generate.vllm.tensorParallelSize=0",
        "embed.grpcPort=grpc",
        "generate.backend=gpt",
        "gateway.replicaCount=many",
        "embed.unknownKey=1",
    ],
)
def test_schema_rejects_wrong_values(helm: Path, override: str) -> None:
    result = run_helm(helm, "--set", override)
    assert result.returncode != 0, override
    assert "schema" in result.stderr


def _leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        paths: set[tuple[str, ...]] = set()
        for key, value in node.items():
            paths |= _leaf_paths(value, (*prefix, key))
        return paths
    return {prefix}


def _schema_at(schema: dict[str, Any], root: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node = schema
    for key in path:
        while "$ref" in node:
            node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties")
        if props is None:
            # A free-form map (labels, resources, security contexts): its own keys are data.
            return node if node.get("additionalProperties", True) is not False else None
        if key not in props:
            return None
        node = props[key]
    return node


def test_schema_and_values_agree() -> None:
    schema = json.loads(SCHEMA.read_text())
    for values_file in (VALUES, VALUES_GPU):
        values = yaml.safe_load(values_file.read_text())
        missing = [".".join(p) for p in _leaf_paths(values) if _schema_at(schema, schema, p) is None]
        assert not missing, f"{values_file.name}: keys missing from values.schema.json: {missing}"
    # And the other way: every property the schema declares is a documented key of values.yaml.
    values = yaml.safe_load(VALUES.read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> list[str]:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        out = []
        for key, sub in node.get("properties", {}).items():
            if node.get("additionalProperties", True) is not False:
                continue
            if not isinstance(value, dict) or key not in value:
                if key in node.get("required", []):
                    out.append(f"{path}{key}")
                continue
            out += walk(sub, value[key], f"{path}{key}.")
        return out

    assert not walk(schema, values, ""), "schema requires keys that values.yaml lacks"


def test_every_values_key_is_documented() -> None:
    """Each key has a `# --` comment, on itself or on an enclosing key (e.g. resources)."""
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of enclosing keys
    previous = ""
    for line in VALUES.read_text().splitlines():
        stripped = line.strip()
        match = re.match(r"^(\s*)(- )?([A-Za-z0-9_.\-/\"]+):(\s.*)?$", line)
        if match and not stripped.startswith("#") and not match.group(2):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            documented = previous.startswith("# --") or any(doc for _, doc in stack)
            is_parent = not (match.group(4) or "").strip()
            if not documented and not is_parent:
                undocumented.append(stripped)
            stack.append((indent, documented))
        if stripped:
            previous = stripped
    assert not undocumented, f"keys without a '# --' comment: {undocumented}"
