#!/usr/bin/env python
"""Paired batch-1 benchmark: plain decoding and speculative decoding with each draft, interleaved image by image.

`scripts/benchmark.py` runs every setting as its own block of 5 images, so drift of a shared machine between
blocks moves the ratios (one H100 run measured the plain loop at 395 ms per image, the next at 273 ms). Here every
image is drawn by every method back to back, with the same seed and class, the device synchronised around each
call, over `reps` images; the speedup is the ratio of medians. One line per method, JSON on stdout.

    python scripts/paired_benchmark.py cpu 40 draft-1L=checkpoints/digits/draft-1L
    python scripts/paired_benchmark.py cuda 40 old=path/to/other-draft new=checkpoints/digits/draft-1L
"""

import json
import statistics
import sys

import torch

from hf_specdec import VQGPTForCausalLM
from hf_specdec.benchmark import time_calls
from hf_specdec.speculative.decoding import speculative_sample
from hf_specdec.speculative import plain_sample


def main(device: str, reps: int, drafts: dict[str, str], teacher_path: str = "checkpoints/digits/teacher") -> dict:
    T = VQGPTForCausalLM.from_pretrained(teacher_path).to(device).eval()
    models = {name: VQGPTForCausalLM.from_pretrained(path).to(device).eval() for name, path in drafts.items()}
    g = torch.Generator(device=device)
    methods = {"plain": lambda: plain_sample(T, prompt, generator=g)}
    for name, d in models.items():
        for gamma in (6, 8):
            methods[f"{name} g{gamma}"] = lambda d=d, gamma=gamma: speculative_sample(
                T, d, prompt, gamma=gamma, generator=g)
        methods[f"{name} adaptive"] = lambda d=d: speculative_sample(
            T, d, prompt, gamma=8, adaptive_gamma=True, generator=g)
    times = {k: [] for k in methods}
    alphas = {k: [] for k in methods}
    for rep in range(-1, reps):  # rep -1 is the warm-up
        classes = T.config.num_classes  # rep % 10 on the digits: the class cycles with the image
        labels = torch.tensor([rep % classes]).to(device) if classes else None
        prompt = T.class_prompt(labels, batch_size=1)
        for k, fn in methods.items():
            g.manual_seed(1000 + rep)
            (dt,), (out,) = time_calls(fn, repeats=1, warmup=0, device=device)  # synchronised around the call
            if rep >= 0:
                times[k].append(dt)
                if hasattr(out, "alpha"):
                    alphas[k].append(out.alpha)
    base = statistics.median(times["plain"])
    results = {k: {"median_ms": 1000 * statistics.median(v), "speedup_vs_plain": base / statistics.median(v),
                   "alpha": statistics.mean(alphas[k]) if alphas[k] else None} for k, v in times.items()}
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {"device": device_name, "reps": reps, "drafts": drafts, "results": results}


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    device, reps = sys.argv[1], int(sys.argv[2])
    pairs = [arg.split("=", 1) for arg in sys.argv[3:]]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("Drafts are given as name=path, e.g. draft-1L=checkpoints/digits/draft-1L.")
    print(json.dumps(main(device, reps, dict(pairs)), indent=1))
