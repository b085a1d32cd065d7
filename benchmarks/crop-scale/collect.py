"""Collect the crop-scale runs' metrics (written by the training scripts under runs/crop-scale/) into results.json.

    python benchmarks/crop-scale/collect.py
"""

import json
import os

ROOT = "runs/crop-scale"
ARMS = {"details": ("small", 0.11, 0.25), "scenes": ("whole", 0.5, 1.0)}


def read(*parts):
    path = os.path.join(ROOT, *parts)
    return json.load(open(path)) if os.path.isfile(path) else None


results = {}
for arm, (folder, low, high) in ARMS.items():
    tokenizer = read(folder, "vq-tokenizer", "training_metrics.json")
    teacher = read(folder, "teacher", "training_metrics.json")
    entry = {"min_scale": low, "max_scale": high,
             "tokenizer": {k: tokenizer[k] for k in ("val_psnr_db", "usage", "perplexity", "steps")},
             "teacher": {k: teacher[k] for k in ("val_loss", "val_perplexity", "entropy_per_token", "steps")}}
    for draft in ("draft-1L", "feature-2L"):
        metrics = read(folder, draft, "distill_metrics.json")
        if metrics is not None:
            entry[draft] = {k: metrics[k] for k in ("alpha", "val_perplexity", "steps", "alpha_by_position")}
    results[arm] = entry
with open(os.path.join(os.path.dirname(__file__), "results.json"), "w") as f:
    json.dump(results, f, indent=1)
print(json.dumps({arm: {k: v for k, v in e.items() if k not in ("tokenizer",)} | {"psnr": e["tokenizer"]["val_psnr_db"]}
                  for arm, e in results.items()}, default=str)[:2000])
