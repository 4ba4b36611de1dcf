"""The chart scaled out: deploy/helm/examples/cluster-values.yaml (the official Qdrant chart in
distributed mode, retrieve's collection settings, external PostgreSQL and Redis, KEDA), rendered
with the real helm and checked object by object, validated against the Kubernetes schemas, and
read back through the services' own Settings classes so a renamed setting fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from test_chart import CHART, HELM, ROOT, container, deployments, is_config, render, run_helm

EXAMPLE = ROOT / "deploy" / "helm" / "examples" / "cluster-values.yaml"
KV_PKG = "kubernetes-validate==1.37.0"  # the version scripts/helm-lint.sh installs
KUBE_VERSIONS = ("1.29.0", "1.33.0")
CATALOG_USERS = ("ingest", "worker", "gateway")
PG_PASSWORD = "s3cret-PG_pass.word~"
PG_HOST = "zhiku-pg-rw.databases.svc.cluster.local"
REDIS_PASSWORD = "r3dis-pass"


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")], check=True, cwd=ROOT)
    return HELM


@pytest.fixture(scope="module")
def example(helm: Path) -> list[dict[str, Any]]:
    return render(helm, "-f", str(EXAMPLE))


def example_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return values


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [d for d in docs if is_config(d) and d["metadata"]["name"] == "zhiku-config"]
    data: dict[str, str] = config["data"]
    return data


def expand(env: list[dict[str, Any]], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """A container's env as the kubelet resolves it: secretKeyRefs from `secrets`, then $(VAR)
    references to variables defined earlier in the list (Kubernetes' dependent variables)."""
    resolved: dict[str, str] = {}
    for var in env:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            resolved[var["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            resolved[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: resolved.get(m[1], m[0]), var["value"]
            )
    return resolved


# ------------------------------------------------------------------------------ Qdrant cluster


def test_qdrant_chart_is_the_vendored_official_dependency() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    (dependency,) = chart["dependencies"]
    vendored = yaml.safe_load((CHART / "charts" / "qdrant" / "Chart.yaml").read_text(encoding="utf-8"))
    assert dependency["name"] == vendored["name"] == "qdrant"
    assert dependency["version"] == vendored["version"]
    assert dependency["repository"] == "https://qdrant.github.io/qdrant-helm"
    assert dependency["condition"] == "qdrant.enabled"
    assert "github.com/qdrant/qdrant-helm" in vendored["sources"][1]
    assert "Apache License" in (CHART / "charts" / "qdrant" / "LICENSE").read_text(encoding="utf-8")


def test_default_render_installs_no_qdrant(helm: Path) -> None:
    docs = render(helm)
    assert not of_kind(docs, "StatefulSet")
    assert not [k for k in config_data(docs) if k.startswith("ZHIKU_RETRIEVE_QDRANT")]


def test_example_runs_qdrant_in_distributed_mode_on_three_nodes(example: list[dict[str, Any]]) -> None:
    (statefulset,) = of_kind(example, "StatefulSet")
    assert statefulset["metadata"]["name"] == "zhiku-qdrant"
    assert statefulset["spec"]["replicas"] == 3
    # Parallel: with OrderedReady the nodes would wait on each other's readiness forever.
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    qdrant_config = next(d for d in of_kind(example, "ConfigMap") if d["metadata"]["name"] == "zhiku-qdrant")
    production = yaml.safe_load(qdrant_config["data"]["production.yaml"])
    assert production["cluster"]["enabled"] is True and production["cluster"]["p2p"]["port"] == 6335
    # Nodes 1 and 2 bootstrap from node 0 over the headless Service's p2p port.
    assert (
        "--bootstrap 'http://zhiku-qdrant-0.zhiku-qdrant-headless:6335'"
        in qdrant_config["data"]["initialize.sh"]
    )
    services = {d["metadata"]["name"]: d for d in of_kind(example, "Service")}
    ports = {p["name"]: p["port"] for p in services["zhiku-qdrant"]["spec"]["ports"]}
    assert ports == {"http": 6333, "grpc": 6334, "p2p": 6335}
    assert services["zhiku-qdrant-headless"]["spec"]["clusterIP"] == "None"
    # One node per Kubernetes node (the release name reaches the selector through tpl).
    pod = statefulset["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "qdrant",
        "app.kubernetes.io/instance": "zhiku",
    }
    budgets = {d["metadata"]["name"]: d for d in of_kind(example, "PodDisruptionBudget")}
    assert budgets["zhiku-qdrant"]["spec"]["maxUnavailable"] == 1
    # The API key comes from the Secret Zhiku's pods read it from: one key, two readers.
    assert example_values()["qdrant"]["apiKey"]["valueFrom"]["secretKeyRef"] == {
        "name": example_values()["secrets"]["existingSecret"],
        "key": "ZHIKU_RETRIEVE_QDRANT_API_KEY",
    }
    assert "/qdrant/config/local.yaml" in [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]


def test_example_passes_the_collection_settings_to_retrieve(example: list[dict[str, Any]]) -> None:
    data = config_data(example)
    assert {k: v for k, v in data.items() if k.startswith("ZHIKU_RETRIEVE_")} == {
        "ZHIKU_RETRIEVE_ADDR": "zhiku-retrieve:50052",
        "ZHIKU_RETRIEVE_BACKEND": "qdrant",
        "ZHIKU_RETRIEVE_QDRANT_URL": "http://zhiku-qdrant:6333",
        "ZHIKU_RETRIEVE_QDRANT_SHARD_NUMBER": "6",
        "ZHIKU_RETRIEVE_QDRANT_REPLICATION_FACTOR": "2",
        "ZHIKU_RETRIEVE_QDRANT_WRITE_CONSISTENCY_FACTOR": "1",
        "ZHIKU_RETRIEVE_QDRANT_ON_DISK_VECTORS": "true",
        "ZHIKU_RETRIEVE_QDRANT_ON_DISK_PAYLOAD": "true",
        "ZHIKU_RETRIEVE_QDRANT_QUANTIZATION": "int8",
        "ZHIKU_RETRIEVE_QDRANT_LAYOUT": "shared",
    }
    retrieve = deployments(example)["retrieve"]
    refs = [e.get("configMapRef", {}).get("name") for e in container(retrieve)["envFrom"]]
    assert "zhiku-config" in refs
    # The URL names the Service the Qdrant chart really renders.
    assert "zhiku-qdrant" in {d["metadata"]["name"] for d in of_kind(example, "Service")}
    # No volume for vectors: they live in the cluster.
    assert "zhiku-retrieve" not in {d["metadata"]["name"] for d in of_kind(example, "PersistentVolumeClaim")}


def test_collection_settings_are_settings_of_the_retrieve_service(
    example: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chart values -> ConfigMap -> RetrieveSettings: every ZHIKU_RETRIEVE_ name the chart writes is
    a field the service reads, with the value the example gives."""
    from services.retrieve.config import RetrieveSettings

    data = config_data(example)
    for name, value in data.items():
        if name.startswith("ZHIKU_RETRIEVE_") and name != "ZHIKU_RETRIEVE_ADDR":
            monkeypatch.setenv(name, value)
    fields = set(RetrieveSettings.model_fields)
    written = {
        n.removeprefix("ZHIKU_RETRIEVE_").lower() for n in data if n.startswith("ZHIKU_RETRIEVE_QDRANT")
    }
    assert written <= fields, f"settings the retrieve service does not read: {sorted(written - fields)}"
    settings = RetrieveSettings()
    assert settings.backend == "qdrant" and settings.qdrant_url == "http://zhiku-qdrant:6333"
    read = {name: getattr(settings, name) for name in written - {"qdrant_url"}}
    assert {
        k: str(v).lower() if isinstance(v, bool) else str(getattr(v, "value", v)) for k, v in read.items()
    } == {
        "qdrant_shard_number": "6",
        "qdrant_replication_factor": "2",
        "qdrant_write_consistency_factor": "1",
        "qdrant_on_disk_vectors": "true",
        "qdrant_on_disk_payload": "true",
        "qdrant_quantization": "int8",
        "qdrant_layout": "shared",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("--set", "retrieve.backend=edge", "--set", "retrieve.replicaCount=1",
          "--set", "autoscaling.enabled=false"), "set retrieve.backend=qdrant"),
        (("--set", "retrieve.qdrant.replicationFactor=4"), "exceeds the Qdrant nodes"),
        (("--set", "retrieve.qdrant.writeConsistencyFactor=3"), "a write could never be acknowledged"),
        (("--set", "retrieve.qdrant.replicationFactor=null",
          "--set", "retrieve.qdrant.writeConsistencyFactor=2"), "replicationFactor (1)"),
        (("--set", "retrieve.qdrant.quantization=scalar"), "schema"),
        (("--set", "qdrant.config.cluster.enabled=false"), "qdrant.config.cluster.enabled=true"),
        (("--set", "config.catalogUrl=postgresql+psycopg://u:p@h/z"), "not both"),
        (("--set", "config.redisUrl=redis://r:6379/0"), "not both"),
        (("--set", "externalPostgresql.existingSecret="), "externalPostgresql.existingSecret"),
        (("--set", "config.extraEnv.ZHIKU_INGEST_QUEUE=bulk"), "must be the queue the workers consume"),
        (("--set", "retrieve.qdrant.layout=tenants"), "schema"),
        (("--set", "retrieve.qdrant.shardNumber=0"), "schema"),
    ],
    ids=["edge", "rf>nodes", "wcf>rf", "wcf>default-rf", "quantization", "no-cluster", "two-catalogs",
         "two-brokers", "no-pg-secret", "queue-mismatch", "layout", "shards"],
)  # fmt: skip
def test_inconsistent_cluster_values_are_refused(
    helm: Path, overrides: tuple[str, ...], message: str
) -> None:
    result = run_helm(helm, "-f", str(EXAMPLE), *overrides)
    assert result.returncode != 0, overrides
    assert message in result.stderr


def test_unset_collection_settings_keep_the_service_defaults(helm: Path) -> None:
    docs = render(helm, "--set", "retrieve.backend=qdrant", "--set", "retrieve.qdrant.url=http://q:6333",
                  "--set", "retrieve.qdrant.onDiskPayload=false")  # fmt: skip
    names = {k: v for k, v in config_data(docs).items() if k.startswith("ZHIKU_RETRIEVE_QDRANT")}
    # false is a choice, not "unset"; the rest stay with the service.
    assert names == {
        "ZHIKU_RETRIEVE_QDRANT_URL": "http://q:6333",
        "ZHIKU_RETRIEVE_QDRANT_ON_DISK_PAYLOAD": "false",
    }


# ------------------------------------------------------------------------ PostgreSQL and Redis


def test_external_services_reach_exactly_the_pods_that_use_them(
    example: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The passwords come from their Secrets, the URLs embed them by $(VAR) expansion, and the
    gateway's and ingest's own Settings read the result as the intended database and broker."""
    from services.gateway.config import GatewaySettings
    from services.ingest.config import IngestSettings

    secrets = {("zhiku-pg-app", "password"): PG_PASSWORD, ("zhiku-redis", "redis-password"): REDIS_PASSWORD}
    deps = deployments(example)
    for name in CATALOG_USERS:
        env = container(deps[name])["env"]
        names = [e["name"] for e in env]
        # Defined before use, or the kubelet leaves $(...) in the value.
        assert names.index("ZHIKU_EXTERNAL_POSTGRESQL_PASSWORD") < names.index("ZHIKU_CATALOG_URL"), name
        assert names.index("ZHIKU_EXTERNAL_REDIS_PASSWORD") < names.index("ZHIKU_REDIS_URL"), name
        resolved = expand(env, secrets)
        assert resolved["ZHIKU_REDIS_URL"] == (
            f"redis://:{REDIS_PASSWORD}@redis-master.databases.svc.cluster.local:6379/0"
        )
        url = make_url(resolved["ZHIKU_CATALOG_URL"])
        assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
            "postgresql+psycopg", "zhiku", PG_PASSWORD, PG_HOST, 5432, "zhiku",
        )  # fmt: skip
        assert url.query == {"sslmode": "require"}
    for name in ("embed", "retrieve", "generate"):
        assert "PASSWORD" not in str(container(deps[name]).get("env")), name
    # secrets.existingSecret: the chart makes no Secret of its own (only Qdrant's API-key file).
    assert {d["metadata"]["name"] for d in of_kind(example, "Secret")} == {"zhiku-qdrant-apikey"}
    resolved = expand(container(deps["ingest"])["env"], secrets)
    for name in ("ZHIKU_CATALOG_URL", "ZHIKU_REDIS_URL"):
        monkeypatch.setenv(name, resolved[name])
    monkeypatch.setenv("ZHIKU_DATA_DIR", str(ROOT / "test-output"))
    ingest = IngestSettings()
    assert make_url(ingest.catalog_url).password == PG_PASSWORD
    assert ingest.redis_url == resolved["ZHIKU_REDIS_URL"]
    gateway = GatewaySettings()
    assert make_url(gateway.catalog_url).host == PG_HOST
    assert gateway.redis_url == resolved["ZHIKU_REDIS_URL"]


def test_external_services_make_the_gateway_and_workers_stateless(example: list[dict[str, Any]]) -> None:
    deps = deployments(example)
    for name in ("gateway", "worker"):
        pod = deps[name]["spec"]["template"]["spec"]
        assert "affinity" not in pod, name  # ReadWriteMany and an external catalog: any node
    gateway_volumes = deps["gateway"]["spec"]["template"]["spec"]["volumes"]
    assert not any("persistentVolumeClaim" in v for v in gateway_volumes)
    # A Redis broker has remote control: the worker's probe asks Celery itself.
    probe = " ".join(container(deps["worker"])["livenessProbe"]["exec"]["command"])
    assert "celery -A services.ingest.worker.celery_app inspect ping" in probe


def test_redis_with_tls_and_a_user(helm: Path) -> None:
    docs = render(
        helm, "-f", str(EXAMPLE), "--set", "externalRedis.tls=true", "--set", "externalRedis.username=zhiku",
        "--set", "externalRedis.port=6380", "--set", "externalRedis.database=2",
    )  # fmt: skip
    resolved = expand(container(deployments(docs)["worker"])["env"], {
        ("zhiku-pg-app", "password"): PG_PASSWORD, ("zhiku-redis", "redis-password"): REDIS_PASSWORD,
    })  # fmt: skip
    assert resolved["ZHIKU_REDIS_URL"] == (
        f"rediss://zhiku:{REDIS_PASSWORD}@redis-master.databases.svc.cluster.local:6380/2"
    )
    (scaled,) = of_kind(docs, "ScaledObject")
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    assert metadata["address"] == "redis-master.databases.svc.cluster.local:6380"
    assert (metadata["databaseIndex"], metadata["enableTLS"], metadata["username"]) == ("2", "true", "zhiku")


def test_redis_without_a_password(helm: Path) -> None:
    docs = render(helm, "--set", "externalRedis.host=redis", "--set", "keda.enabled=true")
    env = container(deployments(docs)["worker"])["env"]
    assert {"name": "ZHIKU_REDIS_URL", "value": "redis://redis:6379/0"} in env
    assert "ZHIKU_EXTERNAL_REDIS_PASSWORD" not in [e["name"] for e in env]
    assert not of_kind(docs, "TriggerAuthentication")
    (scaled,) = of_kind(docs, "ScaledObject")
    assert "authenticationRef" not in scaled["spec"]["triggers"][0]


# ----------------------------------------------------------------------------------- KEDA


def test_keda_scales_workers_on_the_queue_they_consume(
    example: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.ingest.config import IngestSettings

    (scaled,) = of_kind(example, "ScaledObject")
    worker = deployments(example)["worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 20)
    # The autoscaler owns the replica count: a `helm upgrade` must not reset it.
    assert "replicas" not in worker["spec"]
    assert "worker" not in {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in of_kind(example, "HorizontalPodAutoscaler")
    }
    (trigger,) = scaled["spec"]["triggers"]
    # The list KEDA counts is the queue the workers consume, on the server and database they use.
    for name, value in config_data(example).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ZHIKU_DATA_DIR", str(ROOT / "test-output"))
    resolved = expand(container(worker)["env"], {
        ("zhiku-pg-app", "password"): PG_PASSWORD, ("zhiku-redis", "redis-password"): REDIS_PASSWORD,
    })  # fmt: skip
    monkeypatch.setenv("ZHIKU_REDIS_URL", resolved["ZHIKU_REDIS_URL"])
    monkeypatch.setenv("ZHIKU_CATALOG_URL", resolved["ZHIKU_CATALOG_URL"])
    settings = IngestSettings()
    broker = make_url(settings.redis_url)
    assert trigger["metadata"]["listName"] == settings.queue
    assert trigger["metadata"]["address"] == f"{broker.host}:{broker.port}"
    assert trigger["metadata"]["databaseIndex"] == broker.database
    # ... with the workers' password, through a TriggerAuthentication on the same Secret.
    (auth,) = of_kind(example, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "zhiku-redis", "key": "redis-password"}
    ]
    assert int(trigger["metadata"]["listLength"]) >= 1


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(example: list[dict[str, Any]]) -> None:
    deps = deployments(example)
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in of_kind(example, "HorizontalPodAutoscaler")} | {
        d["spec"]["scaleTargetRef"]["name"] for d in of_kind(example, "ScaledObject")
    }
    assert scaled == {f"zhiku-{c}" for c in ("gateway", "embed", "retrieve", "worker")}
    for name, deployment in deps.items():
        assert ("replicas" in deployment["spec"]) == (deployment["metadata"]["name"] not in scaled), name


# ---------------------------------------------------------------------------------- validate


@pytest.fixture(scope="session")
def kubernetes_validate() -> Any:
    """The schema validator scripts/helm-lint.sh uses, installed the same way when missing."""
    try:
        import kubernetes_validate as kv
    except ModuleNotFoundError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", KV_PKG], check=True
        )
        import kubernetes_validate as kv
    return kv


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_example_validates_against_kubernetes(
    example: list[dict[str, Any]], kubernetes_validate: Any, version: str
) -> None:
    checked = 0
    for doc in example:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # CRDs: kubernetes-validate has no schema for them
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked == len(example) - 2
    kinds = {d["kind"] for d in example}
    assert {"StatefulSet", "ScaledObject", "TriggerAuthentication", "HorizontalPodAutoscaler"} <= kinds
