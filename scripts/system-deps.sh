#!/usr/bin/env bash
# Installs the Debian packages flashlive needs, only those missing:
#   runtime: a C/C++ toolchain and cmake (pip compiles llama.cpp once), espeak-ng (fallback voice),
#            tesseract-ocr with English data (reads the text in images)
#   dev:     + Node.js and npm (the JavaScript SDK tests), sox (test speech at 16 kHz),
#            postgresql (the ledger tests start a throwaway cluster on loopback),
#            redis-server (the session store tests start a throwaway server on loopback)
set -euo pipefail
want=(gcc:gcc g++:g++ make:make cmake:cmake espeak-ng:espeak-ng tesseract:tesseract-ocr)
[ "${1:-runtime}" = dev ] && want+=(node:nodejs npm:npm sox:sox redis-server:redis-server)
missing=()
for pair in "${want[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
compgen -G "/usr/share/tesseract-ocr/*/tessdata/eng.traineddata" >/dev/null \
  || missing+=(tesseract-ocr-eng)
# Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin.
if [ "${1:-runtime}" = dev ] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
