#!/usr/bin/env bash
# Fetch the wheels benchmarks/gpu.sh needs on a machine that has JAX, Flax, Optax and Orbax but no
# package registry (e.g. a lent GPU machine whose image lacks ml_collections). Run it where pip
# works; it writes ./.whl (git-ignored), which travels with the checkout (name it in the device
# tool's `carry`) and which gpu.sh installs from.
#
#   bash benchmarks/gpu_wheels.sh [PACKAGE==VERSION ...]   # default: ml_collections
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
PKGS=("$@")
[ ${#PKGS[@]} -gt 0 ] || PKGS=("ml_collections==1.1.0")
mkdir -p .whl
# Pure-Python wheels (py3-none-any): any interpreter and platform.
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "${PKGS[@]}"
ls -l .whl
