#!/usr/bin/env bash
# Install llama-cpp-python 0.3.36 (the generate service's default backend) into the venv.
#
# PyPI ships only an sdist for it, and a build takes ~10 minutes on two cores, so the wheel
# is cached in ~/.cache/zhiku/wheels and reused by every later install. The build pins the
# CPU features instead of GGML_NATIVE: a native build enables AMX on CPUs that advertise it
# and crashes at load on this machine, and a pinned AVX2 build also runs on other x86-64 hosts.
# Idempotent: does nothing when `import llama_cpp` already reports the wanted version.
set -euo pipefail

VERSION="0.3.36"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEEL_DIR="${ZHIKU_WHEEL_DIR:-${HOME}/.cache/zhiku/wheels}"
LOCK="/tmp/zhiku-pip.lock"

if [[ -x "${ROOT}/.venv/bin/python" ]]; then
  PY="${ROOT}/.venv/bin/python"
else
  PY="$(command -v python3)"
fi

installed="$("${PY}" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)"
if [[ "${installed}" == "${VERSION}" ]]; then
  echo "llama-cpp-python ${VERSION} already installed"
  exit 0
fi

find_wheel() {
  compgen -G "${WHEEL_DIR}/llama_cpp_python-${VERSION}-*.whl" | head -n 1 || true
}

wheel="$(find_wheel)"
if [[ -z "${wheel}" ]]; then
  echo "no cached wheel in ${WHEEL_DIR}; building llama-cpp-python ${VERSION} (about 10 minutes)"
  mkdir -p "${WHEEL_DIR}"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    "${PY}" -m pip wheel --no-deps -w "${WHEEL_DIR}" "llama-cpp-python==${VERSION}"
  wheel="$(find_wheel)"
  if [[ -z "${wheel}" ]]; then
    echo "build finished but no llama_cpp_python-${VERSION} wheel is in ${WHEEL_DIR}" >&2
    exit 1
  fi
fi

echo "installing ${wheel}"
# The same lock every engineer's pip uses, so concurrent installs never interleave.
flock "${LOCK}" "${PY}" -m pip install "${wheel}" \
  "numpy>=1.20.0" "diskcache>=5.6.1" "jinja2>=2.11.3" "typing-extensions>=4.5.0"

"${PY}" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__, "installed")'
