#!/usr/bin/env python
"""Print a Markdown table of the trained models in a folder (parameters, size, final loss, alpha vs the teacher,
the teacher's entropy per token on its own samples).

    python scripts/summarize_checkpoints.py checkpoints/digits

Reads the training_metrics.json / distill_metrics.json that the training scripts write next to each model; a model
folder without them (trained elsewhere, downloaded) gets a row with its size only, and a metric a run did not record
(no evaluation) is left blank.
"""

import os
import sys

from hf_specdec.cli import UsageError, run
from hf_specdec.hub import read_json_object

METRICS_FILES = ("training_metrics.json", "distill_metrics.json")


def fmt(value, spec: str, suffix: str = "") -> str:
    """`value` formatted with `spec`, or "" when the run did not record it."""
    return f"{value:{spec}}{suffix}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def read_metrics(path: str) -> dict | None:
    for name in METRICS_FILES:
        metrics = read_json_object(os.path.join(path, name), "training record")
        if metrics is not None:
            return metrics
    return None


def row(name: str, size: int, m: dict | None) -> str:
    size = f"{size / 2**20:.1f} MiB"
    if m is None:
        return f"| {name} | | {size} | (no {' / '.join(METRICS_FILES)}) | | | | |"
    parameters = m.get("parameters")
    params = fmt(parameters / 1e6 if isinstance(parameters, (int, float)) else None, ".2f", "M")  # "" if not a number
    if "val_psnr_db" in m:  # the tokenizer
        return (f"| {name} | {params} | {size} | reconstruction + VQ | PSNR {fmt(m['val_psnr_db'], '.1f', ' dB')} | "
                f"codebook usage {fmt(m.get('usage'), '.0%')}, perplexity {fmt(m.get('perplexity'), '.0f')} | | |")
    teacher = f" ({os.path.basename(os.path.normpath(m['teacher']))})" if isinstance(m.get("teacher"), str) else ""
    alpha = f"{fmt(m['alpha'], '.3f')}{teacher}" if m.get("alpha") is not None else "(teacher)" if "loss" not in m else ""
    method = f"{m['loss']}, lmbda={m.get('lmbda')}, data={m.get('data_source')}" if "loss" in m else "cross-entropy"
    if m.get("draft_type") == "feature":  # alpha of its first draft step, then of its second (own features)
        method += f", reads teacher layers {m.get('feature_layers')}, {m.get('ttt_steps')} steps unrolled"
        alpha = f"{fmt(m.get('alpha'), '.3f')} / {fmt(m.get('alpha_own_features'), '.3f')}{teacher}"
    return (f"| {name} | {params} | {size} | {method} | {fmt(m.get('val_loss'), '.3f')} | "
            f"{fmt(m.get('val_perplexity'), '.2f')} | {alpha} | {fmt(m.get('entropy_per_token'), '.2f')} |")


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
        if not os.path.isdir(path):
            continue
        metrics = read_metrics(path)
        is_model = os.path.isfile(os.path.join(path, "config.json"))
        if metrics is None and not is_model or name == "classifier":  # not a model folder; the FID classifier
            continue
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))
        rows.append(row(name, size, metrics))
    if not rows:
        raise UsageError(f"`folder` {folder!r} holds no model folders (sub-folders with config.json or "
                         f"{' / '.join(METRICS_FILES)}); give a checkpoint set such as checkpoints/digits.")
    print("| model | parameters | size | objective | val loss | val perplexity | alpha vs teacher | entropy per token (nats) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, files in os.walk(folder) for f in files
                if f.endswith(".safetensors")
                and "checkpoints" not in os.path.relpath(dp, folder).split(os.sep))  # (training checkpoints below `folder`)
    print(f"\nTotal weights: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    run(main)
