#!/usr/bin/env python
"""Paired batch-1 benchmark: plain decoding and speculative decoding with each draft, interleaved image by image
(`hf_specdec.bench.paired`: every image drawn by every method back to back, so machine drift cancels in the
ratios). One line per method, JSON on stdout.

    python scripts/paired_benchmark.py cpu 40 draft-1L=checkpoints/digits/draft-1L
    python scripts/paired_benchmark.py cuda 40 old=path/to/other-draft new=checkpoints/digits/draft-1L
"""

import json
import sys

from hf_specdec.bench.paired import paired_benchmark
from hf_specdec.cli import UsageError, run


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if len(argv) < 3:
        raise UsageError("expected DEVICE REPS name=path [name=path ...], e.g. `cpu 40 draft-1L=checkpoints/digits/draft-1L`")
    device, reps = argv[0], argv[1]
    try:
        reps = int(reps)
    except ValueError:
        raise UsageError(f"`reps` (the second argument) must be an integer, got {reps!r}") from None
    pairs = [arg.split("=", 1) for arg in argv[2:]]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise UsageError("drafts are given as name=path, e.g. draft-1L=checkpoints/digits/draft-1L")
    print(json.dumps(paired_benchmark(device, reps, dict(pairs)), indent=1))


if __name__ == "__main__":
    run(main)
