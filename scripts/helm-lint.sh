#!/usr/bin/env bash
# Lint and validate the Helm chart deploy/helm/zhiku without a cluster:
#   1. helm lint --strict with the default values, values-gpu.yaml and the cluster example
#      deploy/helm/examples/cluster-values.yaml;
#   2. helm template for the default (CPU) values, values-gpu.yaml, a render that turns
#      on the optional pieces (ingress, Redis, PostgreSQL, secrets, TEI, Qdrant server, HPAs,
#      first admin and single sign-on with their existing Secrets),
#      one with the CRD-based pieces (ServiceMonitors, KEDA), which step 3 cannot validate,
#      and the cluster example (the official Qdrant chart in distributed mode, external
#      PostgreSQL and Redis, KEDA), whose CRD objects (KEDA's) are set aside before step 3;
#   3. kubernetes-validate --strict of every rendered manifest against the Kubernetes
#      versions in KUBE_VERSIONS (the oldest the chart supports and a current one).
# helm comes from scripts/install-helm.sh (tools/bin/helm); kubernetes-validate is installed
# into .venv when missing. Called by `make helm-lint`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
CHART="deploy/helm/zhiku"
CLUSTER_VALUES="deploy/helm/examples/cluster-values.yaml"
HELM="${ROOT}/tools/bin/helm"
PY="${ROOT}/.venv/bin/python"
KV="${ROOT}/.venv/bin/kubernetes-validate"
KV_PKG="kubernetes-validate==1.37.0"
KUBE_VERSIONS="${KUBE_VERSIONS:-1.29.0 1.33.0}"
LOCK="/tmp/zhiku-pip.lock"

if [[ ! -x "${PY}" ]]; then
  echo "helm-lint: .venv is missing; run 'make install' first" >&2
  exit 1
fi
[[ -x "${HELM}" ]] || bash "${ROOT}/scripts/install-helm.sh"
if [[ ! -x "${KV}" ]]; then
  if command -v flock >/dev/null; then
    flock "${LOCK}" "${PY}" -m pip install --disable-pip-version-check -q "${KV_PKG}"
  else
    "${PY}" -m pip install --disable-pip-version-check -q "${KV_PKG}"
  fi
fi
echo "helm-lint: helm $("${HELM}" version --short), $("${KV}" --version)"

OUT="$(mktemp -d)"
trap 'rm -rf "${OUT}"' EXIT

"${HELM}" lint --strict "${CHART}"
"${HELM}" lint --strict "${CHART}" -f "${CHART}/values-gpu.yaml"
"${HELM}" lint --strict "${CHART}" -f "${CLUSTER_VALUES}"

"${HELM}" template zhiku "${CHART}" --namespace zhiku >"${OUT}/default.yaml"
"${HELM}" template zhiku "${CHART}" --namespace zhiku -f "${CHART}/values-gpu.yaml" >"${OUT}/gpu.yaml"
"${HELM}" template zhiku "${CHART}" --namespace zhiku -f "${CHART}/values-gpu.yaml" \
  --set config.redisUrl=redis://redis:6379/0 \
  --set config.catalogUrl=postgresql+psycopg://zhiku:zhiku@postgres:5432/zhiku \
  --set embed.backend=tei --set embed.tei.url=http://tei:80 \
  --set retrieve.backend=qdrant --set retrieve.qdrant.url=http://qdrant:6333 --set retrieve.replicaCount=2 \
  --set generate.openai.apiKey=sk-test --set embed.tei.apiKey=tei-test --set retrieve.qdrant.apiKey=qd-test --set 'gateway.apiKeys={key-a,key-b}' \
  --set gateway.ingress.enabled=true --set gateway.ingress.className=nginx \
  --set persistence.accessModes[0]=ReadWriteMany --set generate.gpu.runtimeClassName=nvidia \
  --set autoscaling.enabled=true --set 'networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring' \
  --set-json 'generate.models={"fast":{"backend":"openai","openai_base_url":"http://small:8000/v1","openai_model":"small"}}' \
  --set-json 'generate.modelDeployments=[{"name":"Qwen/Qwen2.5-72B","values":{"backend":"vllm","model":"Qwen/Qwen2.5-72B-Instruct","gpu":{"enabled":true},"vllm":{"tensorParallelSize":4},"replicaCount":2,"modelCache":{"persistent":true}}},{"name":"online","values":{"backend":"openai","model":"gpt-4o-mini","openai":{"baseUrl":"https://api.openai.com/v1","apiKey":"sk-online"}}}]' \
  --set generate.rewriteModel=online \
  --set gateway.identity.adminEmail=admin@example.com --set gateway.identity.existingSecret=zhiku-admin \
  --set 'gateway.identity.trustedProxies={10.244.0.0/16}' --set gateway.identity.uploadsPerDay=500 \
  --set gateway.oidc.issuer=https://sso.example.com/realms/acme --set gateway.oidc.clientId=zhiku \
  --set gateway.oidc.existingSecret=zhiku-sso --set gateway.oidc.stateSecretKey=state-secret \
  --set-json 'gateway.oidc.groupMap={"rag-admins":{"admin":true},"finance":{"group":"finance","knowledge_bases":{"finance-reports":"viewer"}}}' \
  >"${OUT}/full.yaml"
# CRD kinds (ServiceMonitor, PodMonitor, KEDA ScaledObject) have no schema in kubernetes-validate:
# they render only when enabled, here into a file of their own that must render but is not validated.
"${HELM}" template zhiku "${CHART}" --namespace zhiku --set serviceMonitor.enabled=true \
  --set keda.enabled=true --set keda.redisAddress=redis:6379 --set config.redisUrl=redis://redis:6379/0 \
  >"${OUT}/crds.yaml"
"${HELM}" template zhiku "${CHART}" --namespace zhiku -f "${CLUSTER_VALUES}" >"${OUT}/cluster-all.yaml"
# The cluster example's KEDA objects go with the other CRD kinds (rendered, not validated).
"${PY}" - "${OUT}/cluster-all.yaml" "${OUT}/cluster.yaml" "${OUT}/cluster-crds.yaml" <<'PY'
import sys

import yaml

source, core, crds = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(source, encoding="utf-8")) if d]
for path, keep in ((core, False), (crds, True)):
    chosen = [d for d in docs if d["apiVersion"].startswith("keda.sh/") == keep]
    with open(path, "w", encoding="utf-8") as out:
        yaml.safe_dump_all(chosen, out, sort_keys=False)
PY
for f in default gpu full crds cluster cluster-crds; do
  echo "helm-lint: rendered ${f}: $(grep -c '^kind:' "${OUT}/${f}.yaml") resources"
done

for version in ${KUBE_VERSIONS}; do
  "${KV}" --strict --quiet -k "${version}" "${OUT}/default.yaml" "${OUT}/gpu.yaml" "${OUT}/full.yaml" \
    "${OUT}/cluster.yaml"
  echo "helm-lint: kubernetes-validate --strict ok against Kubernetes ${version}"
done
