#!/usr/bin/env python
"""Distil a student (draft) from the teacher: the seed's hybrid loss or on-policy GKD/DistillSpec.

    accelerate launch scripts/distill.py configs/distill/digits.yaml --student_id 4      # 1=10L 2=8L 3=6L 4=4L
    accelerate launch scripts/distill.py configs/distill/digits-draft.yaml             # on-policy 1-layer draft
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/distill.py ...

Logs the expected acceptance alpha against the teacher during training; writes the student and
distill_metrics.json to --output_dir.
"""

from hf_specdec.cli import parse_args, run
from hf_specdec.data import DataArguments
from hf_specdec.distill import DistillArguments, run_distillation
from hf_specdec.training import TrainingArguments


def main(argv=None):
    data_args, distill_args, training_args = parse_args(
        (DataArguments, DistillArguments, TrainingArguments), argv, description=__doc__
    )
    run_distillation(data_args, distill_args, training_args)


if __name__ == "__main__":
    run(main)
