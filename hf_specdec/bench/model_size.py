"""Speed against model size: what a teacher step, a verify pass and a draft step cost from the digits teacher up to
LlamaGen-B and -L-like sizes, and the lossless speedup that these costs and a measured acceptance predict.

Models are randomly initialised (costs do not depend on the weights). Every piece is one fixed-shape forward on a
preallocated `RaggedCache` filled to half the grid, timed the way the decoding engine runs it: eagerly on the CPU,
replayed as a CUDA graph on a GPU. The prediction is Leviathan et al.'s expected tokens per round over the measured
cost of a round,

    speedup(gamma) = (1 - alpha^(gamma+1)) / (1 - alpha) * t_step / (gamma * t_draft + t_verify(gamma + 1)),

maximised over gamma (labelled a prediction everywhere it is written).
"""

import json
import os
import statistics
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..hub import check_output_dir, check_outside_models, json_safe
from ..models import VQGPTConfig, VQGPTForCausalLM
from ..speculative import RaggedCache
from ..speculative.sampling import expected_tokens
from .timing import check_device, check_listed_once, check_not_empty, machine_description, time_calls

# name -> (layers, hidden, heads, grid, codebook)
SIZES = {
    "digits-12x128": (12, 128, 4, 8, 256),
    "small-12x256-16x16": (12, 256, 8, 16, 1024),
    "llamagen-B-like-12x768": (12, 768, 12, 16, 16384),
    "llamagen-L-like-24x1024": (24, 1024, 16, 16, 16384),
}


@dataclass
class ModelSizeArguments:
    sizes: list[str] = field(default_factory=lambda: list(SIZES), metadata={"help": f"Any of {', '.join(SIZES)}."})
    draft_layers: list[int] = field(default_factory=lambda: [1, 2, 4], metadata={"help": "Draft depths (teacher width)."})
    gammas: list[int] = field(default_factory=lambda: [4, 8, 12], metadata={"help": "Verify passes of gamma + 1 tokens."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16], metadata={"help": "Rows per forward."})
    alpha: float = field(default=0.88, metadata={"help": "Acceptance for the prediction (measured: draft-1L on digits)."})
    repeats: int = field(default=20, metadata={"help": "Timed calls per piece (median), after 3 warm-up calls."})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    output_dir: str = field(default="benchmarks/model-size-cpu", metadata={"help": "results.json / .md / .png."})

    def __post_init__(self):
        check_output_dir(self.output_dir)
        check_outside_models(self.output_dir, "output_dir")  # results are no part of a model folder
        check_not_empty(self, "sizes", "gammas", "batch_sizes")
        check_listed_once(self, "sizes", "draft_layers", "gammas", "batch_sizes")
        unknown = [s for s in self.sizes if s not in SIZES]
        if unknown:
            raise ValueError(f"`sizes` {unknown} are unknown; choose from {', '.join(SIZES)}.")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"`alpha` must be in (0, 1), got {self.alpha}.")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"`dtype` must be float32 or bfloat16, got {self.dtype!r}.")
        for name in ("gammas", "batch_sizes", "draft_layers"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be integers >= 1, got {getattr(self, name)}.")
        too_deep = [(s, SIZES[s][0]) for s in self.sizes if max(self.draft_layers) >= SIZES[s][0]]
        if too_deep:
            raise ValueError(f"`draft_layers` {self.draft_layers} must stay below each teacher's depth: "
                             f"{', '.join(f'{s} has {n} layers' for s, n in too_deep)}.")
        # a verify pass of gamma + 1 tokens is timed from half the grid on: it must fit in the rest of the sequence
        limits = {s: (SIZES[s][3] ** 2 + 1) - (SIZES[s][3] ** 2 + 1) // 2 - 1 for s in self.sizes}
        too_long = {s: n for s, n in limits.items() if max(self.gammas) > n}
        if too_long:
            raise ValueError(f"`gammas` {self.gammas} must fit in the second half of each grid (timed from its middle): "
                             f"{', '.join(f'at most {n} for {s}' for s, n in too_long.items())}.")
        if self.repeats < 1:
            raise ValueError(f"`repeats` must be >= 1, got {self.repeats}.")
        check_device(self.device)


def make_model(size: str, num_layers: int | None = None) -> VQGPTForCausalLM:
    layers, hidden, heads, grid, codebook = SIZES[size]
    config = VQGPTConfig(codebook_size=codebook, num_classes=10, grid_h=grid, grid_w=grid, hidden_size=hidden,
                         num_hidden_layers=num_layers or layers, num_attention_heads=heads)
    return VQGPTForCausalLM(config).eval()


def forward_timer(model, batch_size: int, tokens: int, device: torch.device, repeats: int) -> tuple[float, int | None]:
    """Median seconds of one `(batch_size, tokens)` forward at half the grid, and the peak bytes it allocates
    (CUDA). On CUDA the forward is captured once as a graph and its replays are timed."""
    config = model.config
    length = -(-config.max_position_embeddings // 8) * 8
    cache = RaggedCache(model.num_layers, length, track_lengths=False)
    head_dim = config.hidden_size // config.num_attention_heads
    dtype = next(model.parameters()).dtype
    cache.early_initialization(batch_size, config.num_attention_heads, head_dim, dtype, device)
    start = config.max_position_embeddings // 2
    positions = (start + torch.arange(tokens, device=device)).expand(batch_size, -1)
    visible = torch.arange(length, device=device) <= positions[:, :, None]
    mask = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, float("-inf"))[:, None]
    ids = torch.randint(0, config.codebook_size, (batch_size, tokens), device=device)

    def forward():
        with torch.inference_mode():
            model(ids, cache=cache, attention_mask=mask, position_ids=positions, use_cache=True)

    for _ in range(3):
        forward()
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward()
        run = graph.replay
        run()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        run = forward
    seconds, _ = time_calls(run, repeats, warmup=0, device=str(device))
    return statistics.median(seconds), peak


def run_model_size_benchmark(args: ModelSizeArguments) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    records = []
    for size in tqdm(args.sizes, desc="sizes"):
        teacher = make_model(size).to(device, dtype)
        parameters = sum(p.numel() for p in teacher.parameters())
        for B in args.batch_sizes:
            record = {"size": size, "parameters": parameters, "batch_size": B, "layers": SIZES[size][0],
                      "hidden": SIZES[size][1], "grid": SIZES[size][3], "codebook": SIZES[size][4]}
            record["teacher_step_s"], record["teacher_step_peak_bytes"] = forward_timer(
                teacher, B, 1, device, args.repeats)
            record["verify_s"] = {g: forward_timer(teacher, B, g + 1, device, args.repeats)[0] for g in args.gammas}
            record["draft_step_s"] = {}
            for layers in args.draft_layers:
                draft = make_model(size, layers).to(device, dtype)
                record["draft_step_s"][layers] = forward_timer(draft, B, 1, device, args.repeats)[0]
                del draft
            record["kv_cache_bytes"] = (B * teacher.config.max_position_embeddings * teacher.config.num_hidden_layers
                                        * 2 * teacher.config.hidden_size * dtype.itemsize)
            predictions = {}
            for layers, t_draft in record["draft_step_s"].items():
                best = max(
                    ((g, expected_tokens(args.alpha, g) * record["teacher_step_s"] / (g * t_draft + record["verify_s"][g]))
                     for g in args.gammas), key=lambda item: item[1])
                predictions[layers] = {"gamma": best[0], "predicted_speedup": best[1],
                                       "c": t_draft / record["teacher_step_s"]}
            record["prediction"] = predictions
            records.append(record)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del teacher
    result = {"args": asdict(args), "machine": machine_description(device), "records": records,
              "formula": "predicted speedup = (1 - alpha^(g+1)) / (1 - alpha) * t_step / (g * t_draft + t_verify(g+1)),"
                         " maximised over g (Leviathan et al. 2023, with the measured verify cost)"}
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(json_safe(result), f, indent=1, allow_nan=False)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(markdown_table(result))
    save_plot(result, os.path.join(args.output_dir, "speed_vs_size.png"))
    return result


def markdown_table(result: dict) -> str:
    args = result["args"]
    gammas, drafts = args["gammas"], args["draft_layers"]
    lines = [f"Machine: {result['machine']}, {args['dtype']}. Medians of {args['repeats']} calls, ms. PREDICTED speedup: "
             f"{result['formula']}, alpha = {args['alpha']}.", "",
             "| size | params | batch | teacher step | " + " | ".join(f"verify {g + 1} tok" for g in gammas) + " | "
             + " | ".join(f"draft {d}L step" for d in drafts) + " | KV cache MiB | "
             + " | ".join(f"predicted, {d}L draft (gamma)" for d in drafts) + " |",
             "| --- " * (5 + len(gammas) + 2 * len(drafts)) + "|"]
    for r in result["records"]:
        verify = " | ".join(f"{1000 * r['verify_s'][g if g in r['verify_s'] else str(g)]:.2f}" for g in gammas)
        draft = " | ".join(f"{1000 * r['draft_step_s'][d if d in r['draft_step_s'] else str(d)]:.2f}" for d in drafts)
        predicted = " | ".join(
            "{:.2f}x ({})".format(p["predicted_speedup"], p["gamma"])
            for p in (r["prediction"][d if d in r["prediction"] else str(d)] for d in drafts))
        lines.append(f"| {r['size']} | {r['parameters'] / 1e6:.1f}M | {r['batch_size']} | {1000 * r['teacher_step_s']:.2f} | "
                     f"{verify} | {draft} | {r['kv_cache_bytes'] / 2**20:.1f} | {predicted} |")
    return "\n".join(lines) + "\n"


def save_plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for B in result["args"]["batch_sizes"]:
        rows = [r for r in result["records"] if r["batch_size"] == B]
        params = [r["parameters"] / 1e6 for r in rows]
        axes[0].plot(params, [1000 * r["teacher_step_s"] for r in rows], "o-", label=f"teacher step, batch {B}")
        for d in result["args"]["draft_layers"]:
            key = d if d in rows[0]["prediction"] else str(d)
            axes[1].plot(params, [r["prediction"][key]["predicted_speedup"] for r in rows], "o-",
                         label=f"{d}-layer draft, batch {B}")
    axes[0].set(xscale="log", yscale="log", xlabel="teacher parameters (M)", ylabel="ms", title="teacher step")
    axes[1].set(xscale="log", xlabel="teacher parameters (M)", ylabel="predicted lossless speedup",
                title=f"PREDICTED speedup at alpha {result['args']['alpha']}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
