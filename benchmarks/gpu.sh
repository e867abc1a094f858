#!/usr/bin/env bash
# GPU benchmark run (issue: performance). Installs the project with a CUDA jaxlib, then runs the
# step and sweep benchmarks on the accelerator and writes a dated results table.
#
#   bash benchmarks/gpu.sh [OUT_DIR]      # default benchmarks/results/gpu-<date>
#
# Budget: the benchmarks are capped at 7 minutes (timeouts below) on one recent NVIDIA GPU, plus
# ~2 minutes of install on a bare machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu-$(date +%Y%m%d)}"
mkdir -p "$OUT"
if ! python -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null; then
  python -m pip install --quiet -e . "jax[cuda12]" psutil
fi
python -c "import jax; print('backend', jax.default_backend(), jax.devices())" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/device.txt" || true
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Float vs search step of ResNet-8 (batch 32 and 128, activations {8} and {2,4,8}; fused mixture
# and the sum of PACT copies).
timeout 200 python benchmarks/step.py --batches 32 128 --repeats 7 --out "$OUT/step.json" \
  | tee "$OUT/step.txt"
# Member throughput of the sweep strategies, N up to 64 (target: N=64 >= 20x N=1); one subprocess
# per point (its own peak memory); the Python loop only up to N=8 (its time grows with N).
timeout 220 python benchmarks/sweep.py --model resnet8 --members 1,4,16,64 --loop-max 4 --strategies loop,vmap \
  --steps 5 --repeats 3 --out "$OUT/sweep.json" | tee "$OUT/sweep.txt"
echo "results in $OUT"
