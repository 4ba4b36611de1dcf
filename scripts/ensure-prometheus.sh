#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are on PATH for the ops tests (tests/ops), which run a
# real Prometheus against the embedded stack and unit-test the alert rules with promtool.
# Machines that already have both are left alone; otherwise Debian's `prometheus` package is
# installed (without recommends: no exporters) and its packaged daemon is not started: the
# tests run their own server on a free port with a generated config.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-prometheus: prometheus/promtool missing and not root; install Debian's 'prometheus'" >&2
  exit 1
fi
apt-get update -qq
# policy-rc.d 101 keeps the package's maintainer scripts from starting the system daemon.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "${policy}" ]; then
  printf '#!/bin/sh\nexit 101\n' >"${policy}"
  chmod +x "${policy}"
  created_policy=1
fi
trap '[ -n "${created_policy}" ] && rm -f "${policy}"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "ensure-prometheus: installed $(prometheus --version 2>&1 | head -n 1)"
