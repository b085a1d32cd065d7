#!/usr/bin/env python
"""The decoding engine against the loops it replaces and against transformers, interleaved image by image.

    python scripts/engine_benchmark.py --device cpu --batch_sizes 1 --methods legacy eager compile
    python scripts/engine_benchmark.py --device cuda --output_dir benchmarks/engine-cuda

Writes results.json and results.md (ms per call, tokens/s, alpha, speedups, peak memory) to --output_dir.
"""

from hf_specdec.bench.engine_speed import EngineBenchmarkArguments, markdown_table, run_engine_benchmark
from hf_specdec.cli import parse_args, run


def main(argv=None):
    (args,) = parse_args((EngineBenchmarkArguments,), argv, description=__doc__)
    print(markdown_table(run_engine_benchmark(args)))


if __name__ == "__main__":
    run(main)
