#!/usr/bin/env bash
# The decoding engine's GPU benchmark, as one prepared run on a lent CUDA machine. With `cpu` it runs sections 1 and
# 2 in a minute on the CPU (tests/test_engine.py does, so that the script cannot rot).
#   bash scripts/gpu_engine_benchmark.sh OUTPUT_DIR [cuda|cpu]        (PYTHON=/path/to/python to choose the interpreter)
# Sections run under their own time limits and each writes its own file, so a slow compile cannot cost the rest.
# On the lent machine (at most 8 files come back; the outer timeout keeps the tar inside the run's 600 s):
#   timeout 560 bash scripts/gpu_engine_benchmark.sh /tmp/engine cuda; tar czf $OUT/engine.tgz -C /tmp/engine .
#   (carry .whl: transformers/diffusers wheels for its offline python)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
out="${1:-benchmarks/engine-cuda}"
device="${2:-cuda}"
mkdir -p "$out"
if [ "$device" = cuda ] && ls .whl/*.whl >/dev/null 2>&1; then  # offline GPU machine: wheels carried with the tree
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
  modes='["eager", "cuda-graph"]'; reps=20; batches="1 16 64"; limit_check=90; limit_main=200; limit_compile=120
  extra="--extra_gammas 4 6 12 --block_verification true --stream_images 64"
else
  # (the CPU path is a test: generous limits, the test machine may be busy)
  modes='["eager"]'; reps=1; batches="1"; limit_check=300; limit_main=300; limit_compile=300; extra="--extras false --extra_gammas 8"
fi
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee "$out/versions.txt"
# 1. correctness on this device: greedy == generate() for every mode, sampled == eager with the same generator
timeout "$limit_check" "$PYTHON" - "$out" "$device" "$modes" <<'PY'
import json, sys
from hf_specdec.bench.engine_speed import EngineBenchmarkArguments, check_engine
out, device, modes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
report = check_engine(EngineBenchmarkArguments(device=device, output_dir=out), modes)
json.dump(report, open(f"{out}/check.json", "w"), indent=1)
print(json.dumps(report, indent=1))
PY
# 2. the engine (eager, CUDA graphs) against the old loops and transformers at batch 1, 16, 64
if [ "$device" = cuda ]; then methods="legacy eager cuda-graph hf-generate hf-assisted"; else methods="legacy eager hf-generate"; fi
timeout "$limit_main" "$PYTHON" scripts/engine_benchmark.py --device "$device" --batch_sizes $batches --reps "$reps" \
  --methods $methods $extra --output_dir "$out/main" 2>&1 | grep -v "it/s\]" | tail -40
# 3. compiled rounds and transformers' own static-cache compiled generate(), batch 1 (compilation is slow; CUDA only)
[ "$device" = cuda ] && timeout "$limit_compile" "$PYTHON" scripts/engine_benchmark.py --device "$device" --batch_sizes 1 --reps "$reps" \
  --methods compile hf-static --extras false --extra_gammas 8 --output_dir "$out/compile" 2>&1 | grep -v "it/s\]" | tail -20
# 4. speed against model size (random weights), CUDA graphs, batch 1 and 16: the costs behind the predicted speedups
[ "$device" = cuda ] && timeout 150 "$PYTHON" scripts/model_size_benchmark.py --device cuda --batch_sizes 1 16 \
  --output_dir "$out/model-size" 2>&1 | grep -v "it/s\]" | tail -12
# 5. the drafts side by side at batch 1, CUDA graphs, interleaved image by image: on a launch-bound GPU a draft step
#    costs about the same for 1 or 2 layers, so the 2-layer and feature drafts' extra tokens per call should pay there
#    (on 2 CPU cores they do not). Last: the least important section, cut first if the earlier ones ran long.
[ "$device" = cuda ] && timeout 80 "$PYTHON" scripts/paired_benchmark.py cuda 20 draft-1L=checkpoints/digits/draft-1L \
  draft-2L=checkpoints/digits/draft-2L feature-2L=checkpoints/digits/feature-2L \
  feature-2L-wide=checkpoints/digits/feature-2L-wide --gammas 6 8 --block_gamma 12 \
  > "$out/paired-drafts.json" 2> >(grep -v "it/s\]" | tail -5 >&2)
ls -la "$out" "$out"/*
