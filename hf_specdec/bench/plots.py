"""Plots of a benchmark run: speedup vs gamma, acceptance over the token grid, acceptance vs draft size, samples."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..images import save_image_grid  # noqa: E402
from ..pipeline import decode_sequences  # noqa: E402


def save_plots(records: list[dict], config, drafts: dict, output_dir: str) -> list[str]:
    paths = []
    fixed = [r for r in records if r["method"] == "speculative"]
    batch = min(r["batch_size"] for r in fixed) if fixed else None

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r["draft"] for r in fixed}):
        rows = sorted((r for r in fixed if r["draft"] == name and r["batch_size"] == batch), key=lambda r: r["gamma"])
        ax.plot([r["gamma"] for r in rows], [r["speedup"] for r in rows], marker="o", label=name)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="gamma (drafted tokens per round)", ylabel="speedup vs fastest plain decoding",
           title=f"Lossless speculative sampling, batch {batch}")
    ax.legend(fontsize=8)
    paths.append(_save(fig, output_dir, "speedup_vs_gamma.png"))

    if fixed:  # acceptance over the grid for the draft with the highest alpha, all batch sizes pooled
        best = max({r["draft"] for r in fixed}, key=lambda d: max(r["alpha"] for r in fixed if r["draft"] == d))
        rows = [r for r in fixed if r["draft"] == best]
        accepted = torch.tensor([r["accepted_by_position"] for r in rows]).sum(0)
        evaluated = torch.tensor([r["evaluated_by_position"] for r in rows]).sum(0).clamp(min=1)
        grid = (accepted / evaluated).reshape(config.grid_h, config.grid_w)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        fig.colorbar(image, ax=ax, label="acceptance")
        ax.set(title=f"Where {best} drafts fail", xlabel="token column", ylabel="token row")
        paths.append(_save(fig, output_dir, "alpha_heatmap.png"))

        fig, ax = plt.subplots(figsize=(5, 4))
        for name in sorted({r["draft"] for r in fixed}):
            alpha = max(r["alpha"] for r in fixed if r["draft"] == name)
            layers = drafts[name].num_layers
            ax.scatter(layers, alpha)
            ax.annotate(name, (layers, alpha), fontsize=8)
        ax.set(xlabel="draft layers", ylabel="acceptance alpha", title="Acceptance vs draft size", ylim=(0, 1))
        paths.append(_save(fig, output_dir, "alpha_vs_draft_size.png"))
    return paths


def save_sample_grids(samples: dict, config, tokenizer, output_dir: str) -> list[str]:
    """One PNG of decoded images per method (largest batch), decoded by `tokenizer` (a `VQTokenizer`)."""
    os.makedirs(os.path.join(output_dir, "samples"), exist_ok=True)
    paths, largest = [], max(key[3] for key in samples)
    for (method, name, gamma, batch), sequences in samples.items():
        if batch != largest or (method == "speculative" and gamma != max(k[2] for k in samples if k[0] == "speculative")):
            continue
        images = decode_sequences(tokenizer, sequences, config).clamp(-1, 1)
        label = "-".join(str(x) for x in (method, name, gamma) if x is not None)
        paths.append(save_image_grid(images, os.path.join(output_dir, "samples", f"{label}.png"), nrow=8))
    return paths


def _save(fig, output_dir: str, name: str) -> str:
    path = os.path.join(output_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
