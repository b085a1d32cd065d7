#!/usr/bin/env python
"""Speed against model size: teacher step, verify pass and draft step times from the digits teacher to LlamaGen-B
and -L-like sizes (randomly initialised), and the PREDICTED lossless speedup from these costs and an acceptance.

    python scripts/model_size_benchmark.py --device cpu --batch_sizes 1 16
    python scripts/model_size_benchmark.py --device cuda --dtype bfloat16 --output_dir benchmarks/model-size-cuda

Writes results.json, results.md and speed_vs_size.png to --output_dir.
"""

from hf_specdec.bench.model_size import ModelSizeArguments, markdown_table, run_model_size_benchmark
from hf_specdec.cli import parse_args, run


def main(argv=None):
    (args,) = parse_args((ModelSizeArguments,), argv, description=__doc__)
    print(markdown_table(run_model_size_benchmark(args)))


if __name__ == "__main__":
    run(main)
