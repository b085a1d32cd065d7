#!/usr/bin/env bash
# The benchmark on a CUDA machine. On an offline machine, put wheels of missing packages in .gpu-wheels/ first.
#   bash scripts/gpu_benchmark.sh [output_dir] [extra benchmark arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .gpu-wheels ] && ls .gpu-wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl
fi
out="${1:-benchmarks/digits-cuda}"
shift || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__)"
PYTHONPATH=. python3 scripts/benchmark.py configs/benchmark/digits.yaml --device cuda --output_dir "$out" "$@"
# batch 1 again, plain and speculative interleaved image by image (ratios robust to machine drift)
PYTHONPATH=. python3 scripts/paired_benchmark.py cuda 40 draft-1L=checkpoints/digits/draft-1L > "$out/paired.json"
