#!/usr/bin/env python
"""Train the class-conditional VQGPT teacher on tokens of the trained VQ tokenizer.

    accelerate launch scripts/train_teacher.py configs/teacher/digits.yaml [--max_steps N ...]

Tokens are precomputed (and cached) first; writes the model (safetensors) and training_metrics.json.
"""

from hf_specdec.cli import parse_args, run
from hf_specdec.data import DataArguments
from hf_specdec.training import TrainingArguments
from hf_specdec.training.teacher import TeacherArguments, train_teacher


def main(argv=None):
    data_args, model_args, training_args = parse_args(
        (DataArguments, TeacherArguments, TrainingArguments), argv, description=__doc__
    )
    train_teacher(data_args, model_args, training_args)


if __name__ == "__main__":
    run(main)
