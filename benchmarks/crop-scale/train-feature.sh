#!/usr/bin/env bash
# The 2-layer feature draft of the detail-crop teacher (shortened recipe's teacher), 1500 steps.
set -x
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
launch="accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
out=runs/crop-scale/small
$launch scripts/distill.py configs/distill/photos-feature-draft.yaml --min_scale 0.11 --max_scale 0.25 \
    --token_cache_dir runs/crop-scale/token-cache --student_preset draft-2L --max_steps 1500 --num_teacher_samples 8192 \
    --teacher_path $out/teacher --tokenizer_path $out/vq-tokenizer --output_dir $out/feature-2L --report_to none
echo DONE
