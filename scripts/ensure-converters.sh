#!/usr/bin/env bash
# Converters for legacy Office files (.doc, .ppt, .wps, .dps; services/ingest/documents/parsers/converted.py):
# LibreOffice headless (writer and impress, without the desktop) and antiword, from Debian's
# packages, installed when missing. Without them those files fail their job saying what to
# install; everything else works, so a machine where apt cannot run only gets a warning.
set -uo pipefail

missing=()
command -v soffice >/dev/null || missing+=(libreoffice-writer-nogui libreoffice-impress-nogui)
command -v antiword >/dev/null || missing+=(antiword)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "ensure-converters: cannot install ${missing[*]} here (needs root and apt-get); .doc/.ppt/.wps/.dps uploads will fail until they are installed" >&2
  exit 0
fi
if [ -z "${ZHIKU_APT_UPDATED:-}" ]; then apt-get update -qq; fi
if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "ensure-converters: installed ${missing[*]}"
else
  echo "ensure-converters: installing ${missing[*]} failed; .doc/.ppt/.wps/.dps uploads will fail until they are installed" >&2
fi
