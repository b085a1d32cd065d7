#!/usr/bin/env python
"""Benchmark every decoding method: speed, acceptance, predicted vs measured speedup, plots and sample grids.

    python scripts/benchmark.py configs/benchmark/digits.yaml            # full run (CPU: ~15 min)
    python scripts/benchmark.py configs/benchmark/digits.yaml --quick    # a few minutes on 2 CPU cores
    python scripts/benchmark.py configs/benchmark/digits.yaml --device cuda --output_dir benchmarks/digits-cuda

Writes results.json, results.md and PNGs to --output_dir.
"""

from hf_specdec.bench.speed import BenchmarkArguments, run_benchmark
from hf_specdec.cli import parse_args, run


def main(argv=None):
    (args,) = parse_args((BenchmarkArguments,), argv, description=__doc__)
    result = run_benchmark(args)
    print(f"machine: {result['machine']}")
    for note in result["notes"]:
        print(note)
    with open(f"{args.output_dir}/results.md") as f:
        print(f.read())


if __name__ == "__main__":
    run(main)
