#!/usr/bin/env bash
# One-GPU benchmark (<= 8 minutes): inference, train steps, compile times, peak memory, MFU -> JSON.
#   bash benchmarks/gpu.sh [OUT.json] [extra flags of benchmarks/gpu.py, e.g. --peak-tflops=989]
# Needs jax with CUDA (pip install -U "jax[cuda12]") and this repository installed (pip install -e .).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-gpu_benchmark.json}"
shift || true
python -c "import jax; d = jax.devices()[0]; print('device:', d.platform, getattr(d, 'device_kind', d))"
# The XLA allocator default (75 % of device memory) leaves room for the largest-batch search.
exec timeout 480 python "$here/gpu.py" --out="$out" --budget-s=400 "$@"
