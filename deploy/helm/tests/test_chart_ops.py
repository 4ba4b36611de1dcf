"""Operational objects of the chart: NetworkPolicies, PDBs, HPAs, KEDA, ServiceMonitors,
Grafana dashboard ConfigMaps and the `helm test` hook, rendered with the real helm."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_chart import CHART, HELM, ROOT, deployments, render, run_helm

SERVICES = ("embed", "retrieve", "generate", "ingest")


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")], check=True, cwd=ROOT)
    return HELM


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == kind}


def peers(rule: dict[str, Any]) -> set[str]:
    return {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule.get("from", [])}


def test_network_policies_let_only_the_gateway_and_worker_in(helm: Path) -> None:
    docs = render(helm)
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == {*SERVICES, "gateway", "worker"}
    allowed = {"embed": {"gateway", "worker"}, "retrieve": {"gateway", "worker"}}
    for component in SERVICES:
        grpc_rule, metrics_rule = policies[component]["spec"]["ingress"]
        assert peers(grpc_rule) == allowed.get(component, {"gateway"}), component
        ports = deployments(docs)[component]["spec"]["template"]["spec"]["containers"][0]["ports"]
        grpc_port = next(p["containerPort"] for p in ports if p["name"] == "grpc")
        assert grpc_rule["ports"] == [{"port": grpc_port, "protocol": "TCP"}]
        assert "from" not in metrics_rule  # Prometheus may scrape from anywhere by default
    assert not by_kind(render(helm, "--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_pdbs_and_hpas_follow_replicas_and_autoscaling(helm: Path) -> None:
    assert not by_kind(render(helm), "PodDisruptionBudget")  # single pods: a budget would block drains
    docs = render(helm, "--set", "autoscaling.enabled=true", "--set", "gateway.replicaCount=3")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"gateway", "embed", "worker"}  # retrieve's edge backend admits one pod
    assert hpas["gateway"]["spec"]["minReplicas"] == 2
    assert hpas["worker"]["spec"]["scaleTargetRef"]["name"] == deployments(docs)["worker"]["metadata"]["name"]
    assert {"gateway", "embed", "worker"} <= set(by_kind(docs, "PodDisruptionBudget"))
    qdrant = render(helm, "--set", "autoscaling.enabled=true", "--set", "retrieve.backend=qdrant",
                    "--set", "retrieve.qdrant.url=http://qdrant:6333")  # fmt: skip
    assert "retrieve" in by_kind(qdrant, "HorizontalPodAutoscaler")


def test_keda_scales_workers_on_the_queue_instead_of_cpu(helm: Path) -> None:
    docs = render(helm, "--set", "autoscaling.enabled=true", "--set", "keda.enabled=true",
                  "--set", "keda.redisAddress=redis:6379",
                  "--set", "config.redisUrl=redis://redis:6379/0")  # fmt: skip
    assert "worker" not in by_kind(docs, "HorizontalPodAutoscaler")
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "zhiku-ingest"
    refused = run_helm(helm, "--set", "keda.enabled=true")
    assert refused.returncode != 0 and "redisAddress" in refused.stderr
    # Celery on the SQLAlchemy transport leaves the Redis list empty: KEDA would never scale up.
    no_broker = run_helm(helm, "--set", "keda.enabled=true", "--set", "keda.redisAddress=redis:6379")
    assert no_broker.returncode != 0 and "config.redisUrl or externalRedis.host" in no_broker.stderr


def test_monitors_render_only_when_enabled_and_name_jobs_like_the_rules(helm: Path) -> None:
    assert not [d for d in render(helm) if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    docs = render(helm, "--set", "serviceMonitor.enabled=true")
    monitors = by_kind(docs, "ServiceMonitor")
    assert set(monitors) == {*SERVICES, "gateway"}
    assert monitors["gateway"]["spec"]["endpoints"][0]["port"] == "http"
    (worker,) = [d for d in docs if d["kind"] == "PodMonitor"]
    jobs = {m["spec"]["endpoints"][0]["relabelings"][0]["replacement"] for m in monitors.values()}
    jobs.add(worker["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["replacement"])
    assert jobs == {f"zhiku-{c}" for c in (*SERVICES, "gateway", "worker")}
    assert 'job=~"zhiku-.*"' in (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()


def test_dashboards_ship_as_sidecar_configmaps_equal_to_deploy_grafana(helm: Path) -> None:
    sources = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "deploy" / "grafana").glob("*.json")}
    copies = {p.name: p.read_text(encoding="utf-8") for p in (CHART / "dashboards").glob("*.json")}
    assert copies == sources, "deploy/helm/zhiku/dashboards must be a copy of deploy/grafana"
    maps = [
        d for d in render(helm) if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]
    ]
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)
    shipped = {name: json.loads(text) for m in maps for name, text in m["data"].items()}
    assert shipped == {name: json.loads(text) for name, text in sources.items()}


def test_helm_test_hook_asks_the_gateway_readiness(helm: Path) -> None:
    docs = render(helm)
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    gateway_service = next(
        d
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    )
    (url,) = pod["spec"]["containers"][0]["args"]
    assert (
        url
        == f"http://{gateway_service['metadata']['name']}:{gateway_service['spec']['ports'][0]['port']}/readyz"
    )
