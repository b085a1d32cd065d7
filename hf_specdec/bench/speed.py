"""Speed and acceptance of every decoding method, measured side by side in one run.

Methods: the teacher alone (transformers `generate()` and the project's own plain loop), each draft alone, HF
assisted generation (batch 1), and the own speculative sampler with every draft and the self-speculative draft at
each gamma and adaptive gamma, at several batch sizes. Each record has the latency per image (median and
quartiles over repeats, warm-up excluded), tokens/s, measured acceptance alpha, tokens per teacher call, the
speedup against the fastest plain decoding *measured in the same run at the same batch size*, and the speedup
that Leviathan et al.'s formula predicts from the measured alpha and cost ratio c.
"""

import json
import os
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..cli import field_defaults
from ..hub import (check_checkpoints_dir, check_output_dir, check_outside_models, checkpoint_path, json_safe,
                   load_draft, load_pretrained, resolve_drafts)
from ..models import VQGPTForCausalLM, VQTokenizer
from ..pipeline import check_sampling_options, class_prompts
from ..speculative import EarlyExitDraft, expected_speedup, plain_sample, pooled_statistics, speculative_sample
from .timing import check_device, check_listed_once, check_not_empty, machine_description, quartiles, time_calls, tokens_per_call_cell


@dataclass
class BenchmarkArguments:
    checkpoints_dir: str = field(default="checkpoints/digits", metadata={"help": "Folder with teacher and drafts."})
    teacher: str = field(default="teacher", metadata={"help": "Teacher sub-folder (or a path / Hub id)."})
    tokenizer: str = field(default="vq-tokenizer", metadata={"help": "Tokenizer sub-folder, for sample grids."})
    drafts: list[str] = field(
        default_factory=lambda: ["draft-1L", "student-4L", "student-6L", "student-8L", "student-10L"],
        metadata={"help": "Drafts: sub-folders, folder paths or Hub repo ids; a size preset's name (student-4L, ...) with no folder is skipped with a note, any other unknown name is refused."},
    )
    self_speculative_layers: list[int] = field(default_factory=lambda: [2], metadata={"help": "Early-exit drafts."})
    gammas: list[int] = field(default_factory=lambda: [1, 2, 4, 6, 8], metadata={"help": "Fixed draft lengths."})
    adaptive_gamma_max: int = field(default=8, metadata={"help": "Max gamma of the adaptive runs (0 = none)."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16], metadata={"help": "Images per call."})
    repeats: int = field(default=5, metadata={"help": "Timed calls per setting (after warm-up)."})
    warmup: int = field(default=1, metadata={"help": "Untimed calls per setting (>= 1: the first call builds the "
                                                     "decoder, compiles, and calibrates adaptive gamma)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (lossless at any value)."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k (None = plain sampling)."})
    cfg_scale: float | None = field(default=None, metadata={"help": "Classifier-free guidance scale."})
    hf_assisted: bool = field(default=True, metadata={"help": "Also time transformers' assisted generation (batch 1)."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    quick: bool = field(default=False, metadata={"help": "A few minutes on 2 CPU cores: of the drafts, gammas, batch sizes "
                                                        "and repeats left at their defaults, fewer (2 drafts, gammas 4 "
                                                        "and 8, batches 1 and 16, 3 repeats)."})
    output_dir: str = field(default="benchmarks/digits-cpu", metadata={"help": "JSON, Markdown and PNG outputs."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled images."})

    def __post_init__(self):
        if self.quick:  # cuts only what was left at its default: a value the user gave is what they asked for
            defaults = field_defaults(self)
            quick = {"drafts": self.drafts[:2], "gammas": [g for g in self.gammas if g in (4, 8)],
                     "batch_sizes": [b for b in self.batch_sizes if b in (1, 16)], "repeats": min(self.repeats, 3)}
            for name, value in quick.items():
                if getattr(self, name) == defaults[name]:
                    setattr(self, name, value)
        if any(g < 1 for g in self.gammas):
            raise ValueError(f"`gammas` must be >= 1, got {self.gammas}.")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"`batch_sizes` must be >= 1, got {self.batch_sizes}.")
        check_not_empty(self, "gammas", "batch_sizes")
        check_listed_once(self, "gammas", "batch_sizes", "self_speculative_layers")
        if self.repeats < 1:
            raise ValueError(f"`repeats` must be >= 1, got {self.repeats}.")
        if self.warmup < 1:  # the first call of a setting compiles and calibrates: it must never be timed
            raise ValueError(f"`warmup` must be >= 1 (the first call of each setting builds the decoder, compiles and "
                             f"calibrates adaptive gamma: never timed), got {self.warmup}.")
        check_device(self.device)
        check_checkpoints_dir(self.checkpoints_dir)
        check_output_dir(self.output_dir)
        check_outside_models(self.output_dir, "output_dir")  # results are no part of a model folder


def load_models(args: BenchmarkArguments):
    """Teacher and the drafts that exist: `{name: model}`, plus notes on the missing ones."""
    teacher = load_pretrained(VQGPTForCausalLM, checkpoint_path(args.checkpoints_dir, args.teacher), "teacher", args.device)
    self_drafts = {}
    for layers in args.self_speculative_layers:  # before the other drafts load: the option named, not the library's
        self_drafts[f"self-{layers}L"] = EarlyExitDraft(teacher, layers, argument="self_speculative_layers")
    drafts, notes = {}, []
    for name in resolve_drafts(args.drafts, args.checkpoints_dir, notes):
        drafts[name] = load_draft(checkpoint_path(args.checkpoints_dir, name), "drafts", teacher, args.device)
    if args.drafts and not drafts:
        raise ValueError(f"`drafts`: none of {args.drafts} is a draft in {args.checkpoints_dir!r} ({'; '.join(notes)}).")
    drafts.update(self_drafts)
    return teacher, drafts, notes


def load_tokenizer(args: BenchmarkArguments, notes: list[str]):
    """The tokenizer for the sample grids, loaded before any timing (None, with a note, when its folder is missing)."""
    path = os.path.join(args.checkpoints_dir, args.tokenizer)
    if not os.path.isdir(path):
        notes.append(f"no sample grids: no tokenizer folder {path}")
        return None
    return load_pretrained(VQTokenizer, path, "tokenizer")


def run_benchmark(args: BenchmarkArguments) -> dict:
    """Measure everything; write `results.json`, `results.md` and the plots to `args.output_dir`."""
    torch.manual_seed(args.seed)
    teacher, drafts, notes = load_models(args)
    tokenizer = load_tokenizer(args, notes)
    config = teacher.config
    new_tokens = config.num_image_tokens
    sampling = dict(do_sample=True, temperature=args.temperature, top_k=args.top_k, cfg_scale=args.cfg_scale)
    check_sampling_options(teacher, {"gamma": "gammas"}, max(args.gammas), **sampling)
    check_sampling_options(teacher, {"gamma": "adaptive_gamma_max"}, args.adaptive_gamma_max or None)
    records, samples = [], {}

    jobs = []
    for B in args.batch_sizes:
        jobs += [("teacher-hf-generate", None, None, B), ("teacher-plain", None, None, B)]
        jobs += [("draft-alone", name, None, B) for name in drafts]
        if B == 1 and args.hf_assisted:
            # HF assisted generation passes its assistant token ids only: self-speculative and feature drafts
            # cannot be assistants
            jobs += [("hf-assisted", name, g, B) for name in drafts
                     if not name.startswith("self-") and not getattr(drafts[name], "reads_features", False)
                     for g in args.gammas]
        jobs += [("speculative", name, g, B) for name in drafts for g in args.gammas]
        if args.adaptive_gamma_max:
            jobs += [("speculative-adaptive", name, args.adaptive_gamma_max, B) for name in drafts]

    per_token = {}  # (name, B) -> seconds per token of plain decoding, for the cost ratio c
    for method, name, gamma, B in tqdm(jobs, desc="benchmark"):
        prompt = class_prompts(teacher, B)
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        outputs_are_stats = False
        if method == "teacher-hf-generate":
            fn = lambda: teacher.generate(prompt, do_sample=True, temperature=args.temperature, top_k=args.top_k, cfg_scale=args.cfg_scale)  # noqa: E731
        elif method == "teacher-plain":
            fn = lambda: plain_sample(teacher, prompt, generator=generator, **sampling)  # noqa: E731
        elif method == "draft-alone":
            fn = lambda: plain_sample(drafts[name], prompt, generator=generator, **sampling)  # noqa: E731
        elif method == "hf-assisted":
            drafts[name].generation_config.num_assistant_tokens = gamma
            fn = lambda: teacher.generate(prompt, assistant_model=drafts[name], do_sample=True, temperature=args.temperature, top_k=args.top_k, cfg_scale=args.cfg_scale)  # noqa: E731
        else:
            adaptive = method == "speculative-adaptive"
            fn = lambda: speculative_sample(teacher, drafts[name], prompt, gamma=gamma, generator=generator, adaptive_gamma=adaptive, **sampling)  # noqa: E731
            outputs_are_stats = True
        seconds, results = time_calls(fn, args.repeats, args.warmup, args.device)
        p25, median, p75 = quartiles(seconds)
        record = {"method": method, "draft": name, "gamma": gamma, "batch_size": B,
                  "latency_per_image_ms": 1000 * median / B, "latency_p25_ms": 1000 * p25 / B,
                  "latency_p75_ms": 1000 * p75 / B, "tokens_per_s": B * new_tokens / median}
        if method in ("teacher-plain", "draft-alone", "teacher-hf-generate"):
            per_token[(name or method, B)] = median / new_tokens
        if outputs_are_stats:
            stats = pooled_statistics(results)
            for key in ("alpha", "acceptance_rate", "tokens_per_teacher_call", "tokens_per_image_round", "mean_gamma"):
                record[key] = stats[key]
            record["accepted_by_position"] = torch.stack([out.accepted_by_position for out in results]).sum(0).tolist()
            record["evaluated_by_position"] = torch.stack([out.evaluated_by_position for out in results]).sum(0).tolist()
            samples[(method, name, gamma, B)] = results[-1].sequences
        else:
            samples[(method, name, gamma, B)] = results[-1]
        records.append(record)

    for record in records:
        B = record["batch_size"]
        fastest = min(per_token[("teacher-plain", B)], per_token[("teacher-hf-generate", B)]) * new_tokens
        record["speedup"] = (fastest / B) * 1000 / record["latency_per_image_ms"]
        if "alpha" in record and (record["draft"], B) in per_token:
            c = per_token[(record["draft"], B)] / per_token[("teacher-plain", B)]
            gamma = record["mean_gamma"]
            record["cost_ratio"] = c
            record["predicted_speedup"] = expected_speedup(record["alpha"], max(1, round(gamma)), c)
    result = {"args": asdict(args), "machine": machine_description(args.device), "notes": notes, "records": records}
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(json_safe(result), f, indent=1, allow_nan=False)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(markdown_table(records))
    from .plots import save_plots, save_sample_grids  # matplotlib only when plotting

    save_plots(records, config, drafts, args.output_dir)
    if tokenizer is not None:
        save_sample_grids(samples, config, tokenizer, args.output_dir)
    return result


def markdown_table(records: list[dict]) -> str:
    lines = ["| method | draft | gamma | batch | ms / image (p25-p75) | tokens/s | alpha | tokens / teacher call (per image) | speedup | predicted |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        gamma = r["gamma"] if r["method"] != "speculative-adaptive" else f"adaptive<={r['gamma']} (mean {r['mean_gamma']:.1f})"
        alpha = f"{r['alpha']:.3f}" if "alpha" in r else ""
        per_call = tokens_per_call_cell(r)
        predicted = f"{r['predicted_speedup']:.2f}x" if "predicted_speedup" in r else ""
        lines.append(
            f"| {r['method']} | {r['draft'] or ''} | {gamma if gamma is not None else ''} | {r['batch_size']} | "
            f"{r['latency_per_image_ms']:.1f} ({r['latency_p25_ms']:.1f}-{r['latency_p75_ms']:.1f}) | "
            f"{r['tokens_per_s']:.0f} | {alpha} | {per_call} | {r['speedup']:.2f}x | {predicted} |"
        )
    return "\n".join(lines) + "\n"
