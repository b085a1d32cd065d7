#!/usr/bin/env bash
# The write-up's setup, reproduced on GPUs with internet: Mini-ImageNet dogs (timm/mini-imagenet, filtered to the
# dog synsets), 64x64 images -> 16x16 tokens, an unconditional 12-layer teacher (the write-up's benchmark), the
# seed's hybrid students 10L/8L/6L/4L, the on-policy 1-layer draft, then speed and quality.
#
#   NUM_GPUS=8 bash scripts/train_dogs.sh                # bf16 DDP on 8 GPUs (configs/accelerate/multi_gpu.yaml)
#   NUM_GPUS=1 bash scripts/train_dogs.sh                # one GPU
#   REPO_ID=my-org/my-mini-imagenet bash scripts/train_dogs.sh
#
# Every step checkpoints (--save_every) and resumes with RESUME=latest. Offline, the same commands run against a
# Hub mirror (HF_ENDPOINT) or a cached copy (HF_HUB_OFFLINE=1); tests/test_dogs_offline.py runs them on a tiny one.
set -euo pipefail
cd "$(dirname "$0")/.."
NUM_GPUS=${NUM_GPUS:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
REPO_ID=${REPO_ID:-timm/mini-imagenet}
OUT=${OUT:-checkpoints/dogs}
common=(--repo_id "$REPO_ID")
[ -n "${RESUME:-}" ] && common+=(--resume_from_checkpoint "$RESUME")
if [ "$NUM_GPUS" -gt 1 ]; then
  launch=(accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes "$NUM_GPUS")
else
  launch=(accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no)
fi
"${launch[@]}" scripts/train_vqvae.py configs/vqvae/dogs.yaml "${common[@]}" --output_dir "$OUT/vq-tokenizer"
tokens=(--tokenizer_path "$OUT/vq-tokenizer")
"${launch[@]}" scripts/train_teacher.py configs/teacher/dogs.yaml "${common[@]}" "${tokens[@]}" --output_dir "$OUT/teacher"
teacher=(--teacher_path "$OUT/teacher")
"${launch[@]}" scripts/distill.py configs/distill/dogs-draft.yaml "${common[@]}" "${tokens[@]}" "${teacher[@]}" \
  --output_dir "$OUT/draft-1L"
for id in 1 2 3 4; do
  layers=$((12 - 2 * id))
  "${launch[@]}" scripts/distill.py configs/distill/dogs.yaml "${common[@]}" "${tokens[@]}" "${teacher[@]}" \
    --student_id "$id" --output_dir "$OUT/student-${layers}L"
done
python scripts/train_classifier.py --dataset mini-imagenet-dogs --repo_id "$REPO_ID" --resolution 64 \
  --output_dir "$OUT/classifier"
python scripts/summarize_checkpoints.py "$OUT"
device=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
python scripts/paired_benchmark.py "$device" 40 draft-1L="$OUT/draft-1L" student-4L="$OUT/student-4L" \
  --teacher "$OUT/teacher" --block_gamma 12
python scripts/evaluate_quality.py configs/benchmark/quality.yaml --dataset mini-imagenet-dogs --repo_id "$REPO_ID" \
  --resolution 64 --checkpoints_dir "$OUT" --drafts draft-1L student-4L student-10L --device "$device" \
  --output_dir benchmarks/dogs-quality
