#!/usr/bin/env python
"""FID and IS of real images, the teacher, students, speculative and relaxed speculative samples.

    python scripts/train_classifier.py                      # once: the offline feature extractor
    python scripts/evaluate_quality.py configs/benchmark/quality.yaml

Writes results.json, results.md and sample grids to --output_dir.
"""

from hf_specdec.cli import parse_args, run
from hf_specdec.data import DataArguments
from hf_specdec.bench.quality import QualityArguments, evaluate_quality


def main(argv=None):
    data_args, args = parse_args((DataArguments, QualityArguments), argv, description=__doc__,
                                unread={"token_cache_dir": "it compares generated images with real ones and caches no tokens"})
    evaluate_quality(args, data_args)
    with open(f"{args.output_dir}/results.md") as f:
        print(f.read())


if __name__ == "__main__":
    run(main)
