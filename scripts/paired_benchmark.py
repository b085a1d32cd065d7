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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if len(argv) < 3:
        raise SystemExit(__doc__)
    device, reps = argv[0], int(argv[1])
    pairs = [arg.split("=", 1) for arg in argv[2:]]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("Drafts are given as name=path, e.g. draft-1L=checkpoints/digits/draft-1L.")
    print(json.dumps(paired_benchmark(device, reps, dict(pairs)), indent=1))


if __name__ == "__main__":
    main()
