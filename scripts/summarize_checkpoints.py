#!/usr/bin/env python
"""Print a Markdown table of the trained models in a folder (parameters, size, final loss, alpha vs the teacher,
the teacher's entropy per token on its own samples).

    python scripts/summarize_checkpoints.py checkpoints/digits

Reads the training_metrics.json / distill_metrics.json that the training scripts write next to each model.
"""

import json
import os
import sys

from hf_specdec.cli import UsageError, run


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if len(argv) > 1:
        raise UsageError(f"expected one folder, got {argv}")
    folder = argv[0] if argv else "checkpoints/digits"
    if not os.path.isdir(folder):
        raise UsageError(f"`folder` {folder!r} is not a directory")
    rows = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors")) if os.path.isdir(path) else 0
        for metrics_file in ("training_metrics.json", "distill_metrics.json"):
            if os.path.exists(os.path.join(path, metrics_file)):
                with open(os.path.join(path, metrics_file)) as f:
                    try:
                        m = json.load(f)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{os.path.join(path, metrics_file)} is not valid JSON ({error}).") from None
                if "val_psnr_db" in m:  # the tokenizer
                    rows.append(f"| {name} | {m['parameters'] / 1e6:.2f}M | {size / 2**20:.1f} MiB | reconstruction + VQ "
                                f"| PSNR {m['val_psnr_db']:.1f} dB | codebook usage {m['usage']:.0%}, perplexity {m['perplexity']:.0f} | | |")
                    continue
                if m.get("alpha") is not None:
                    teacher = f" ({os.path.basename(os.path.normpath(m['teacher']))})" if m.get("teacher") else ""
                    alpha = f"{m['alpha']:.3f}{teacher}"
                else:
                    alpha = "(teacher)"
                entropy = f"{m['entropy_per_token']:.2f}" if m.get("entropy_per_token") is not None else ""
                method = f"{m['loss']}, lmbda={m['lmbda']}, data={m['data_source']}" if "loss" in m else "cross-entropy"
                if m.get("draft_type") == "feature":  # alpha of its first draft step, then of its second (own features)
                    method += f", reads teacher layers {m['feature_layers']}, {m['ttt_steps']} steps unrolled"
                    alpha = f"{m['alpha']:.3f} / {m['alpha_own_features']:.3f}{teacher}"
                rows.append(f"| {name} | {m['parameters'] / 1e6:.2f}M | {size / 2**20:.1f} MiB | {method} | "
                            f"{m['val_loss']:.3f} | {m['val_perplexity']:.2f} | {alpha} | {entropy} |")
    print("| model | parameters | size | objective | val loss | val perplexity | alpha vs teacher | entropy per token (nats) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, files in os.walk(folder) for f in files
                if f.endswith(".safetensors") and "/checkpoints/" not in dp + "/")
    print(f"\nTotal weights: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    run(main)
