#!/usr/bin/env bash
# Shortened photos recipe (the issue writer's budget: tokenizer 1000, teacher 700, draft 800) at two crop scales.
set -x
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
launch="accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
for arm in "small 0.11 0.25" "whole 0.5 1.0"; do  # (run side by side, one arm each, in the measured run)
  set -- $arm; name=$1; lo=$2; hi=$3; out=runs/crop-scale/$name
  data="--min_scale $lo --max_scale $hi --token_cache_dir runs/crop-scale/token-cache-$name"
  $launch scripts/train_vqvae.py configs/vqvae/photos.yaml $data --max_steps 1000 --output_dir $out/vq-tokenizer --report_to none
  $launch scripts/train_teacher.py configs/teacher/photos.yaml $data --max_steps 700 --tokenizer_path $out/vq-tokenizer \
      --output_dir $out/teacher --report_to none
  $launch scripts/distill.py configs/distill/photos-draft.yaml $data --max_steps 800 --num_teacher_samples 8192 \
      --teacher_path $out/teacher --tokenizer_path $out/vq-tokenizer --output_dir $out/draft-1L --report_to none
done
echo DONE
