#!/usr/bin/env python
"""Train the small digits classifier whose features stand in for Inception's in FID / IS (offline).

    python scripts/train_classifier.py --output_dir checkpoints/digits/classifier

Trains on the digits train split, reports accuracy on the test split, saves safetensors + metrics.json.
"""

import json
import os
from dataclasses import dataclass, field

import torch

from hf_specdec.cli import parse_args, run
from hf_specdec.data import DataArguments, images_to_tensor
from hf_specdec.hub import check_output_dir, check_output_not_input
from hf_specdec.metrics.classifier import accuracy, train_classifier
from hf_specdec.training.trainer import check_output_free, take_run_lock


@dataclass
class ClassifierArguments:
    output_dir: str = field(default="checkpoints/digits/classifier", metadata={"help": "Where the classifier goes."})
    epochs: int = field(default=15, metadata={"help": "Passes over the train split."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a classifier already saved in `output_dir` (the FID/IS figures measured with it change)."})

    def __post_init__(self):
        check_output_dir(self.output_dir)
        if self.epochs < 1:
            raise ValueError(f"`epochs` must be >= 1, got {self.epochs}.")


def main(argv=None):
    data_args, args = parse_args((DataArguments, ClassifierArguments), argv, description=__doc__,
                                unread={"token_cache_dir": "the classifier trains on images, not on cached tokens"})
    check_output_not_input(args.output_dir, data_dir=data_args.data_dir)
    check_output_free(args)  # the shipped classifier's features define the FID/IS figures of BENCHMARKS.md
    os.makedirs(args.output_dir, exist_ok=True)
    lock = take_run_lock(None, args.output_dir)  # a second run into the same folder is refused while this one lives
    splits = data_args.load()
    tensors = {name: (images_to_tensor(split[:]["image"], data_args.resolution), torch.as_tensor(split[:]["label"]))
               for name, split in splits.items()}
    model = train_classifier(*tensors["train"], epochs=args.epochs, seed=args.seed)
    metrics = {name: accuracy(model, *tensors[name]) for name in ("validation", "test")}
    model.save_pretrained(args.output_dir)
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump({"validation_accuracy": metrics["validation"], "test_accuracy": metrics["test"],
                   "parameters": sum(p.numel() for p in model.parameters()), "epochs": args.epochs,
                   # what it tells apart, so that evaluate_quality can refuse another dataset's images
                   "dataset": data_args.dataset, "classes": splits["train"].features["label"].names,
                   "resolution": data_args.resolution}, f, indent=2)
    os.remove(lock)
    print(f"test accuracy {metrics['test']:.3f} (validation {metrics['validation']:.3f})")


if __name__ == "__main__":
    run(main)
