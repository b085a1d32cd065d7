#!/usr/bin/env bash
# The recipe that produced checkpoints/photos/ on 2 CPU cores (hours there; minutes on a GPU): the `photos` crops
# (ten photographs shipped inside installed packages, pip install "hf-specdec[photos]"), 8x8 tokens at 32x32 for the
# class-conditional and the unconditional teacher and their 1-layer drafts, then the 16x16 recipe at 64x64.
set -euo pipefail
cd "$(dirname "$0")/.."
launch="accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
fresh="--overwrite_output_dir true"   # the recipe retrains the shipped models in place
$launch scripts/train_vqvae.py configs/vqvae/photos.yaml $fresh
$launch scripts/train_teacher.py configs/teacher/photos.yaml $fresh
$launch scripts/train_teacher.py configs/teacher/photos-uncond.yaml $fresh
$launch scripts/distill.py configs/distill/photos-draft.yaml $fresh
$launch scripts/distill.py configs/distill/photos-uncond-draft.yaml $fresh
python scripts/train_classifier.py --dataset photos --output_dir checkpoints/photos/classifier $fresh   # FID/IS features
# 16x16 tokens (the write-up's regime): 64x64 crops of the same photographs
$launch scripts/train_vqvae.py configs/vqvae/photos64.yaml $fresh
$launch scripts/train_teacher.py configs/teacher/photos64.yaml $fresh
$launch scripts/distill.py configs/distill/photos64-draft.yaml $fresh
python scripts/summarize_checkpoints.py checkpoints/photos
