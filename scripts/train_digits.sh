#!/usr/bin/env bash
# The full recipe that produced checkpoints/digits/ (CPU: about an hour on 2 cores; minutes on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
launch="accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
fresh="--overwrite_output_dir true"   # the recipe retrains the shipped models in place
$launch scripts/train_vqvae.py configs/vqvae/digits.yaml $fresh
python scripts/precompute_tokens.py configs/data/digits.yaml
$launch scripts/train_teacher.py configs/teacher/digits.yaml $fresh
for id in 1 2 3 4; do
  layers=$((12 - 2 * id))
  $launch scripts/distill.py configs/distill/digits.yaml $fresh --student_id "$id" --output_dir "checkpoints/digits/student-${layers}L"
done
python scripts/compact_checkpoints.py --folders checkpoints/digits/student-{10,8,6,4}L \
  --teacher_path checkpoints/digits/teacher   # float16 storage: half the bytes, alpha within 1e-5
$launch scripts/distill.py configs/distill/digits-draft.yaml $fresh
$launch scripts/distill.py configs/distill/digits-draft.yaml $fresh --student_preset draft-2L \
  --max_steps 3000 --eval_every 500 --output_dir checkpoints/digits/draft-2L
$launch scripts/distill.py configs/distill/digits-feature-draft.yaml $fresh   # reads the teacher's features
$launch scripts/distill.py configs/distill/digits-feature-draft.yaml $fresh --student_preset draft-2L \
  --num_teacher_samples 24576 --max_steps 6000 --eval_every 1000 --output_dir checkpoints/digits/feature-2L
wide="configs/distill/digits-feature-draft.yaml --student_preset draft-2L --draft_hidden_size 256 \
  --num_teacher_samples 24576 --eval_every 1000 --output_dir checkpoints/digits/feature-2L-wide"
$launch scripts/distill.py $wide $fresh --max_steps 6000   # twice the teacher's width: the best acceptance, for GPUs
$launch scripts/distill.py $wide --max_steps 10000 --resume_from_checkpoint latest   # a second schedule on top
python scripts/train_classifier.py $fresh   # FID/IS features, not a generator
python scripts/summarize_checkpoints.py checkpoints/digits
