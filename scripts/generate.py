#!/usr/bin/env python
"""The main job: draw every class with speculative decoding and compare with the teacher alone.

    python scripts/generate.py                                   # shipped digit checkpoints, samples.png
    python scripts/generate.py --checkpoints photos              # the photographs (photos-uncond: unconditional)
    python scripts/generate.py --method self-speculative --gamma 4 --output grid.png
    python scripts/generate.py --teacher org/teacher --assistant org/draft --tokenizer org/vq --device cuda

Prints two speedups, measured in the same run: per image (batch 1: each image drawn by the teacher alone and by the
method back to back, median over the images; the latency a user waits for one picture; `--repeats 3` times every
image three times, for a steadier figure on a noisy machine) and whole grid (every image
in one batch, or streamed through `--batch_size` rows: throughput), and the acceptance (alpha with token-wise
verification; with block verification accepted / tested drafts, which sits above alpha). The PNG has one
labelled row per class.
"""

from hf_specdec.cli import parse_args, run
from hf_specdec.bench.sample_grid import SampleGridArguments, run_sample_grid


def main(argv=None):
    (args,) = parse_args((SampleGridArguments,), argv, description=__doc__)
    result = run_sample_grid(args)
    method = result["method"]
    print(f"{result['images']} images -> {result['output']}")
    print(f"{'':28}{'teacher alone':>15}{method:>18}{'speedup':>10}")
    one = result["per_image"]
    print(f"{'per image (batch 1, median)':28}{one['teacher_ms']:>12.1f} ms{one['method_ms']:>15.1f} ms"
          f"{one['speedup']:>9.2f}x")
    if len(one["speedup_per_pass"]) > 1:
        print(f"{'':28}per pass: {', '.join(f'{x:.2f}x' for x in one['speedup_per_pass'])} (medians over all passes above)")
    grid = result["whole_grid"]
    if grid:
        label = f"whole grid (batch {grid['batch_size']}{', streamed' if grid['streamed'] else ''})"
        print(f"{label:28}{grid['teacher_images_per_second']:>8.1f} img/s{grid['method_images_per_second']:>11.1f} img/s"
              f"{grid['speedup']:>9.2f}x")
    if result["alpha"] is not None:
        # With block verification accepted / tested counts a block's tests differently: it is not the draft's alpha
        # (sum min(p, q)), and sits above it.
        what = "acceptance alpha" if result["verification"] == "token" else "acceptance (block verification, not alpha)"
        print(f"per image: {what} {result['alpha']:.3f}, {result['tokens_per_teacher_call']:.2f} tokens per teacher call")


if __name__ == "__main__":
    run(main)
