#!/usr/bin/env python
"""Paired batch-1 benchmark: plain decoding and speculative decoding with each draft, interleaved image by image
(`hf_specdec.bench.paired`: every image drawn by every method back to back, so machine drift cancels in the
ratios). One line per method, JSON on stdout.

    python scripts/paired_benchmark.py DEVICE REPS name=path [name=path ...] [--teacher PATH] [--block_gamma N]
                                       [--mode auto|eager|compile] [--gammas 6 8] [--num_drafts 2 3] [--python_wrapper] [--frozen]
                                       [--dynamo_guards] [--dtype float32|bfloat16|float16] [--also_dtype bfloat16]

    python scripts/paired_benchmark.py cpu 40 draft-1L=checkpoints/digits/draft-1L
    python scripts/paired_benchmark.py cuda 40 old=path/to/other-draft new=checkpoints/digits/draft-1L
    python scripts/paired_benchmark.py cpu 40 draft-1L=checkpoints/photos/draft-1L --teacher checkpoints/photos/teacher \\
        --block_gamma 12 --mode compile

--teacher: the teacher folder or Hub id (default checkpoints/digits/teacher). --block_gamma: also block verification
(Sun et al. 2025) at that gamma. --mode: the engine's mode for every method (default auto: eager on the CPU).
--gammas: the fixed gammas timed (default 6 8; adaptive gamma goes up to the largest). --num_drafts: also multi-draft
verification (SpecInfer's multi-step speculative sampling) with this many independent chains, at the largest gamma.
--python_wrapper (mode compile, CPU): also plain and block (or largest-gamma) decoding compiled with Inductor's Python
wrapper instead of the default C++ one, in the same run. --frozen (mode compile, CPU): also plain, block (when
--block_gamma is set) and largest-gamma decoding with the weights compiled in as constants (Inductor's C++ GEMM
templates; `compile_options={"freeze_weights": True}`), in the same run. --dynamo_guards (mode compile): also plain,
block and largest-gamma decoding with dynamo's guards checked before every round (the engine skips them by default;
`compile_options={"skip_guards": False}`), in the same run. --dtype: the models' dtype for every method (default
float32; the checkpoints are cast after loading). --also_dtype: also plain, block (when --block_gamma is set) and
largest-gamma decoding with the models cast to this dtype, in the same run (speedups stay against the plain loop in
--dtype; each dtype is lossless against its own teacher).
"""

import json
import sys

from hf_specdec.bench.paired import DTYPES, paired_benchmark
from hf_specdec.cli import ArgumentParser, UsageError, run
from hf_specdec.models.modeling_vqgpt import check_model_path
from hf_specdec.speculative.checks import MODES


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    parser = ArgumentParser(usage=__doc__)
    parser.add_argument("device")
    parser.add_argument("reps", type=int)
    parser.add_argument("drafts", nargs="+")
    parser.add_argument("--teacher", default="checkpoints/digits/teacher")
    parser.add_argument("--block_gamma", type=int, default=None)
    parser.add_argument("--mode", default="auto", choices=MODES)
    parser.add_argument("--gammas", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--num_drafts", type=int, nargs="+", default=[])
    parser.add_argument("--python_wrapper", action="store_true")
    parser.add_argument("--frozen", action="store_true")
    parser.add_argument("--dynamo_guards", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--also_dtype", default=None, choices=DTYPES)
    args = parser.parse_args(argv)
    pairs = [arg.split("=", 1) for arg in args.drafts]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise UsageError("drafts are given as name=path, e.g. draft-1L=checkpoints/digits/draft-1L")
    names = [name for name, _ in pairs]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise UsageError(f"draft name(s) {twice} given twice: each draft needs its own name")
    try:  # the option's name in the message, not the library's `teacher_path`
        check_model_path(args.teacher, "VQGPTForCausalLM")
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(f"--teacher: {error}") from None
    print(json.dumps(paired_benchmark(args.device, args.reps, dict(pairs), args.teacher, args.block_gamma, args.mode,
                                      tuple(args.gammas), tuple(args.num_drafts), args.python_wrapper,
                                      args.frozen, args.dynamo_guards, args.dtype, args.also_dtype),
                     indent=1))


if __name__ == "__main__":
    run(main)
