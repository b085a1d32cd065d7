#!/usr/bin/env python
"""The main job: draw every class with speculative decoding and compare with the teacher alone.

    python scripts/generate.py                                   # shipped digit checkpoints, samples.png
    python scripts/generate.py --method self-speculative --gamma 4 --output grid.png
    python scripts/generate.py --teacher org/teacher --assistant org/draft --tokenizer org/vq --device cuda

Prints the teacher-alone time, the speculative time, the speedup and the acceptance alpha.
"""

from hf_specdec.cli import parse_args, run
from hf_specdec.bench.sample_grid import SampleGridArguments, run_sample_grid


def main(argv=None):
    (args,) = parse_args((SampleGridArguments,), argv, description=__doc__)
    result = run_sample_grid(args)
    print(f"{result['images']} images -> {result['output']}")
    print(f"teacher alone:      {result['teacher_seconds']:.2f} s")
    print(f"{result['method']:<19} {result['seconds']:.2f} s  ({result['speedup']:.2f}x)")
    if result["alpha"] is not None:
        print(f"acceptance alpha:   {result['alpha']:.3f}")


if __name__ == "__main__":
    run(main)
