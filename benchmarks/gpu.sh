#!/usr/bin/env bash
# GPU benchmark run (issue: performance): the step and sweep benchmarks on the accelerator, with a
# dated results table.
#
#   bash benchmarks/gpu.sh [OUT_DIR]      # default benchmarks/results/gpu-<date>
#
# Works on a machine without network access (the project is used from this checkout, no install):
# a package missing there (e.g. ml_collections on an image that has JAX, Flax, Optax and Orbax) is
# installed from wheels in ./.whl (fetch them beforehand with `bash benchmarks/gpu_wheels.sh`, on
# a machine with a package registry), else from the registry, else the script stops and names it.
# When $OUT is set (a lent device machine), the results are copied there as well.
#
# Budget: the benchmarks are capped at 7.8 minutes (timeouts 190 + 200 + 80 s below) on one
# recent NVIDIA GPU; step.py and sweep.py save their JSON after every point, so a run cut short
# keeps what it measured (meta.complete = false).
#
# GPU_SH_DRY=1 runs the same pipeline in a couple of minutes on any backend (CPU included) with tiny
# settings, to check the script itself before spending accelerator time on it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# A dry run (GPU_SH_DRY=1, any backend) writes outside the repository: its numbers are not GPU
# results and must not land next to them.
if [ "${GPU_SH_DRY:-0}" = 1 ]; then DEFAULT_OUT="${TMPDIR:-/tmp}/jpq-gpu-dry-$(date +%Y%m%d)"
else DEFAULT_OUT="benchmarks/results/gpu-$(date +%Y%m%d)"; fi
OUT_DIR="${1:-$DEFAULT_OUT}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

# The modules jpq_jax and the benchmarks import (the rest of its dependencies are imported lazily).
NEEDED="jax flax optax orbax.checkpoint chex numpy ml_collections rich yaml psutil"
missing() { "$PY" - "$@" <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m.split(".")[0]) is None))
EOF
}
MISSING="$(missing $NEEDED)"
if [ -n "$MISSING" ]; then
  echo "missing: $MISSING"
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/jpq_site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/jpq_site"
  else
    "$PY" -m pip install -q ml_collections psutil || true
  fi
  MISSING="$(missing $NEEDED)"
  if [ -n "$MISSING" ]; then
    echo "gpu.sh: still missing: $MISSING (run 'bash benchmarks/gpu_wheels.sh' where pip works and carry .whl)" >&2
    exit 2
  fi
fi

"$PY" -c "import jax; print('backend', jax.default_backend(), 'jax', jax.__version__, jax.devices())" \
  | tee "$OUT_DIR/device.txt"
if [ "${GPU_SH_DRY:-0}" = 1 ]; then
  STEP_ARGS=(--batches 8 --repeats 2 --no-copies)
  SWEEP_ARGS=(--model demo --members 1,2 --strategies loop,vmap,vmap:1 --steps 2 --repeats 2)
  PROFILE_ARGS=(--model demo --members 2 --strategy vmap --steps 2)
else
  if ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
    echo "gpu.sh: JAX sees no GPU here (GPU_SH_DRY=1 checks the script on any backend)" >&2
    exit 2
  fi
  # Float vs search step of ResNet-8 (batch 32 and 128, activations {8} and {2,4,8}; jpq's step
  # without and with remat="dots", whose memory saving XLA:CPU does not show). The sum of PACT
  # copies (the pre-fused step) is left out to stay inside the time budget.
  STEP_ARGS=(--batches 32 128 --repeats 7 --no-copies)
  # Member throughput of loop and vmap, N up to 64 (target: N = 64 >= 20x N = 1); one subprocess
  # per point (its own peak memory); the Python loop only up to N = 4 (its time grows with N);
  # vmap:16 (sweep.member_chunk=16) at N = 64 only: device memory against throughput.
  SWEEP_ARGS=(--model resnet8 --members 1,4,16,64 --loop-max 4 --strategies loop,vmap,vmap:16
              --steps 5 --repeats 3)
  # Where the vmapped step's time goes on the GPU (kernels by group), N = 64.
  PROFILE_ARGS=(--members 64 --strategy vmap --steps 3)
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee -a "$OUT_DIR/device.txt" || true
set +e
timeout 190 "$PY" benchmarks/step.py "${STEP_ARGS[@]}" --out "$OUT_DIR/step.json" 2>&1 | tee "$OUT_DIR/step.txt"
STEP_RC=${PIPESTATUS[0]}
timeout 200 "$PY" benchmarks/sweep.py "${SWEEP_ARGS[@]}" --out "$OUT_DIR/sweep.json" 2>&1 | tee "$OUT_DIR/sweep.txt"
SWEEP_RC=${PIPESTATUS[0]}
timeout 80 "$PY" benchmarks/profile_step.py "${PROFILE_ARGS[@]}" --out "$OUT_DIR/profile.json" 2>&1 \
  | tee "$OUT_DIR/profile.txt"   # informative only: its exit status does not fail the run
set -e
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  cp "$OUT_DIR"/* "$OUT"/
fi
echo "results in $OUT_DIR (step.py exit $STEP_RC, sweep.py exit $SWEEP_RC)"
[ "$STEP_RC" = 0 ] && [ "$SWEEP_RC" = 0 ]
