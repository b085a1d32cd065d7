"""The decoding engine against the loops it replaces and against transformers, interleaved image by image.

For each batch size, every method draws the same images (same seed and classes) back to back, the device
synchronised around each call, over `reps` rounds after one untimed warm-up (which also compiles or captures). The
speedups are ratios of medians measured in this one run: plain and speculative in each execution mode, and each
against the fastest plain decoding at that batch size.

Methods (`--methods`):
    legacy        the loops before the engine (`speculative/legacy.py`): eager, one host sync per round
    eager         the engine, eager
    compile       the engine, each round `torch.compile(fullgraph=True)`, captured as a CUDA graph on CUDA
    compile-frozen  the same with the weights compiled in as constants (`freeze_weights=True`: Inductor's C++ GEMM
                  templates, CPU only; minutes of autotuning in the warm-up call)
    cuda-graph    the engine, each round one captured CUDA graph (CUDA only)
    hf-generate   `teacher.generate()` (DynamicCache), plain only
    hf-static     `teacher.generate(cache_implementation="static")`, which transformers compiles itself on CUDA
    hf-assisted   `teacher.generate(assistant_model=draft)`, batch 1 only
"""

import dataclasses
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..hub import (check_checkpoints_dir, check_output_dir, check_outside_models, checkpoint_path, json_safe,
                   load_draft, load_pretrained)
from ..models import VQGPTForCausalLM
from ..pipeline import class_prompts
from ..speculative import EarlyExitDraft, SamplingConfig, SpeculativeOutput, clear_decoders, get_decoder, pooled_statistics
from ..speculative.legacy import legacy_plain_sample, legacy_speculative_sample
from .timing import check_device, check_listed_once, check_not_empty, machine_description, quartiles, synchronize, tokens_per_call_cell

METHODS = ("legacy", "eager", "compile", "compile-frozen", "cuda-graph", "hf-generate", "hf-static", "hf-assisted")
ENGINE_MODES = ("eager", "compile", "compile-frozen", "cuda-graph")  # methods that are the engine in a mode


@dataclass
class EngineBenchmarkArguments:
    checkpoints_dir: str = field(default="checkpoints/digits", metadata={"help": "Folder with teacher and draft."})
    teacher: str = field(default="teacher", metadata={"help": "Teacher sub-folder (or a path)."})
    draft: str = field(default="draft-1L", metadata={"help": "Draft sub-folder (or a path): a VQGPT or a feature draft."})
    gamma: int = field(default=8, metadata={"help": "Draft tokens per round."})
    extra_gammas: list[int] = field(
        default_factory=lambda: [4, 6, 12],
        metadata={"help": "More draft lengths, run in the fastest engine mode present (cuda-graph, else compile, "
                          "else eager)."},
    )
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16, 64], metadata={"help": "Images per call."})
    methods: list[str] = field(
        default_factory=lambda: ["legacy", "eager", "cuda-graph", "hf-generate", "hf-assisted"],
        metadata={"help": f"Any of {', '.join(METHODS)}; methods that cannot run on the device are skipped."},
    )
    extras: bool = field(default=True, metadata={"help": "Also run adaptive gamma and the 2-layer self-speculative "
                                                          "draft in that mode."})
    block_verification: bool = field(default=False, metadata={"help": "Also run block verification (Sun et al.) "
                                                                      "at gamma and every extra gamma."})
    stream_images: int = field(default=0, metadata={"help": "At every batch size B below it, also stream this many "
        "images through B rows (continuous batching: a row takes the next image when its own is done), plain and "
        "speculative, in the fastest engine mode; speedups are then per image (0 = off)."})
    reps: int = field(default=20, metadata={"help": "Timed calls per method and batch size (after one warm-up)."})
    legacy_max_batch: int = field(default=16, metadata={"help": "Largest batch the slow legacy / HF loops run at."})
    time_budget_s: float = field(default=0.0, metadata={"help": "Stop adding batch sizes after this many seconds (0 = none)."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    output_dir: str = field(default="benchmarks/engine-cpu", metadata={"help": "Where results.json / results.md go."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled images."})

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"`methods` {unknown} are unknown; choose from {', '.join(METHODS)}.")
        if not isinstance(self.gamma, int) or self.gamma < 1:
            raise ValueError(f"`gamma` must be an integer >= 1, got {self.gamma!r}.")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"`batch_sizes` must be >= 1, got {self.batch_sizes}.")
        if self.reps < 1:
            raise ValueError(f"`reps` must be >= 1, got {self.reps}.")
        if any(g < 1 for g in self.extra_gammas):
            raise ValueError(f"`extra_gammas` must be integers >= 1, got {self.extra_gammas}.")
        check_not_empty(self, "batch_sizes", "methods")
        check_listed_once(self, "batch_sizes", "extra_gammas")
        if self.legacy_max_batch < 1:
            raise ValueError(f"`legacy_max_batch` must be >= 1, got {self.legacy_max_batch}.")
        if self.stream_images < 0:
            raise ValueError(f"`stream_images` must be >= 0 (0 = off), got {self.stream_images}.")
        if not 0.0 <= self.time_budget_s < float("inf"):
            raise ValueError(f"`time_budget_s` must be a finite number >= 0 (0 = none), got {self.time_budget_s}.")
        check_device(self.device)
        check_checkpoints_dir(self.checkpoints_dir)
        check_output_dir(self.output_dir)
        check_outside_models(self.output_dir, "output_dir")  # results are no part of a model folder


def check_gammas_fit(args: EngineBenchmarkArguments, config) -> None:
    """`gamma` and every `extra_gammas` value at most the teacher's grid, each under its own name, before any
    timing (the decoder's own check named `gamma` for an `extra_gammas` value)."""
    grid = config.num_image_tokens
    if args.gamma > grid:
        raise ValueError(f"`gamma` must be at most the teacher's {grid}-token grid, got {args.gamma}.")
    beyond = [g for g in args.extra_gammas if g > grid]
    if beyond:
        raise ValueError(f"`extra_gammas` must be at most the teacher's {grid}-token grid, got {beyond}.")


def _load(args, name, argument):
    return load_pretrained(VQGPTForCausalLM, checkpoint_path(args.checkpoints_dir, name), argument, args.device)


def _load_draft(args, teacher):
    """The draft: a VQGPT or a feature draft (which loads with its teacher)."""
    return load_draft(checkpoint_path(args.checkpoints_dir, args.draft), "draft", teacher, args.device)


def _methods(args, teacher, draft, B):
    """`{name: fn(prompt, generator) -> SpeculativeOutput | tokens}` for the methods that run at batch size B."""
    device = torch.device(args.device)
    config = teacher.config
    sampling = SamplingConfig()  # temperature 1, no top-k: the teacher's own distribution
    reads_features = getattr(draft, "reads_features", False)
    methods = {}
    for mode in ENGINE_MODES:
        if mode not in args.methods or (mode == "cuda-graph" and device.type != "cuda") or (
            mode == "compile-frozen" and device.type != "cpu"
        ):
            continue
        frozen = mode == "compile-frozen"
        engine_mode = "compile" if frozen else mode
        plain = get_decoder(teacher, None, 0, B, sampling, engine_mode, freeze_weights=frozen)
        spec = get_decoder(teacher, draft, args.gamma, B, sampling, engine_mode, freeze_weights=frozen)
        new = config.max_position_embeddings - 1
        methods[f"plain/{mode}"] = lambda prompt, g, d=plain: d.generate(prompt, new, g)["sequences"]
        methods[f"speculative/{mode}"] = lambda prompt, g, d=spec: SpeculativeOutput.from_record(
            d.generate(prompt, new, g), prompt.shape[1])
    fastest = next((m for m in ("cuda-graph", "compile", "eager") if any(k.endswith(f"/{m}") for k in methods)), None)
    if fastest is not None:
        new = config.max_position_embeddings - 1
        extra = [(f"speculative-g{g}", draft, g, False, sampling) for g in args.extra_gammas if g != args.gamma]
        if args.block_verification:
            block = dataclasses.replace(sampling, verification="block")
            extra += [(f"speculative-block-g{g}", draft, g, False, block)
                      for g in sorted({args.gamma, *args.extra_gammas})]
        if args.extras:
            extra += [("speculative-adaptive", draft, args.gamma, True, sampling),
                      ("self-speculative-2L", EarlyExitDraft(teacher, 2), args.gamma, False, sampling)]
        for name, d, gamma, adaptive, setting in extra:
            decoder = get_decoder(teacher, d, gamma, B, setting, fastest)
            methods[f"{name}/{fastest}"] = lambda prompt, g, d=decoder, a=adaptive: SpeculativeOutput.from_record(
                d.generate(prompt, new, g, adaptive_gamma=a), prompt.shape[1])
        if args.stream_images > B:  # the prompt passed in is the batch's; a stream draws its own images
            stream = class_prompts(teacher, args.stream_images)
            plain = get_decoder(teacher, None, 0, B, sampling, fastest)
            spec = get_decoder(teacher, draft, args.gamma, B, sampling, fastest)
            methods[f"plain-stream/{fastest}"] = lambda prompt, g, d=plain: d.generate(stream, new, g)["sequences"]
            methods[f"speculative-stream/{fastest}"] = lambda prompt, g, d=spec: SpeculativeOutput.from_record(
                d.generate(stream, new, g), 1)
    if B <= args.legacy_max_batch:
        if "legacy" in args.methods:
            methods["plain/legacy"] = lambda prompt, g: legacy_plain_sample(teacher, prompt, generator=g)
            if not reads_features:  # the old loops predate feature drafts
                methods["speculative/legacy"] = lambda prompt, g: legacy_speculative_sample(
                    teacher, draft, prompt, gamma=args.gamma, generator=g)
        if "hf-generate" in args.methods:
            methods["plain/hf-generate"] = lambda prompt, g: teacher.generate(prompt, do_sample=True, top_k=None)
        if "hf-static" in args.methods:
            methods["plain/hf-static"] = lambda prompt, g: teacher.generate(
                prompt, do_sample=True, top_k=None, cache_implementation="static")
    if B == 1 and "hf-assisted" in args.methods and not reads_features:  # assisted generation passes tokens only
        draft.generation_config.num_assistant_tokens = args.gamma
        methods["speculative/hf-assisted"] = lambda prompt, g: teacher.generate(
            prompt, assistant_model=draft, do_sample=True, top_k=None)
    return methods


def _tokens(output) -> torch.Tensor:
    return output.sequences if hasattr(output, "sequences") else output


def _peak_memory(fn, device) -> int | None:
    """Peak bytes allocated by one call above what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    synchronize(str(device))
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(str(device))
    return torch.cuda.max_memory_allocated(device) - before


def run_engine_benchmark(args: EngineBenchmarkArguments) -> dict:
    """Measure; write `results.json` and `results.md` to `args.output_dir`; return the results."""
    device = torch.device(args.device)
    teacher = _load(args, args.teacher, "teacher")
    check_gammas_fit(args, teacher.config)
    draft = _load_draft(args, teacher)
    config = teacher.config
    new_tokens = config.num_image_tokens
    started = time.perf_counter()
    records, notes = [], []
    if getattr(draft, "reads_features", False):
        notes.append(f"draft {args.draft!r} reads the teacher's features: no speculative/legacy row (the old loops "
                     "predate feature drafts) and no hf-assisted row (assisted generation passes tokens only)")
    for B in args.batch_sizes:
        if args.time_budget_s and time.perf_counter() - started > args.time_budget_s:
            notes.append(f"batch {B} skipped: the time budget of {args.time_budget_s:.0f} s was spent")
            continue
        clear_decoders()
        prompt = class_prompts(teacher, B)
        methods = _methods(args, teacher, draft, B)
        times = {name: [] for name in methods}
        first_call = {}
        outputs = {name: [] for name in methods}
        failed = {}
        for rep in tqdm(range(-1, args.reps), desc=f"batch {B}", leave=False):
            for name, fn in methods.items():
                if name in failed:
                    continue
                generator = torch.Generator(device=device).manual_seed(args.seed * 100_003 + rep)
                torch.manual_seed(args.seed * 100_003 + rep)  # the HF paths draw from the global generator
                try:
                    synchronize(str(device))
                    tic = time.perf_counter()
                    out = fn(prompt, generator)
                    synchronize(str(device))
                except Exception as error:  # a method that cannot run here is reported, not fatal
                    failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                    continue
                seconds = time.perf_counter() - tic
                if rep < 0:
                    first_call[name] = seconds
                else:
                    times[name].append(seconds)
                    outputs[name].append(out)
        images = {name: args.stream_images if "-stream/" in name else B for name in methods}
        # per image, so that streamed calls (more images per call) compare with the others
        plain_medians = {name: statistics.median(v) / images[name] for name, v in times.items()
                         if v and name.startswith("plain")}
        fastest_plain = min(plain_medians, key=plain_medians.get) if plain_medians else None
        for name in methods:
            if name in failed:
                records.append({"method": name, "batch_size": B, "error": failed[name]})
                continue
            v = times[name]
            p25, median, p75 = quartiles(v)
            mode = name.split("/", 1)[1]
            record = {
                "method": name, "batch_size": B, "images": images[name],
                "gamma": None if name.startswith("plain") else args.gamma,
                "median_ms": 1000 * median, "p25_ms": 1000 * p25, "p75_ms": 1000 * p75,
                "ms_per_image": 1000 * median / images[name], "tokens_per_s": images[name] * new_tokens / median,
                "first_call_s": first_call.get(name),
                "peak_memory_bytes": _peak_memory(lambda: methods[name](prompt, None), device),
            }
            family, _ = name.split("/", 1)
            same = f"plain-stream/{mode}" if family.endswith("-stream") else f"plain/{mode}"
            if same in plain_medians:
                record["speedup_vs_plain_same_mode"] = plain_medians[same] / (median / images[name])
            if fastest_plain is not None:
                record["speedup_vs_fastest_plain"] = plain_medians[fastest_plain] / (median / images[name])
                record["fastest_plain"] = fastest_plain
            reference = next((f"{family}/{m}" for m in ("cuda-graph", "eager") if f"{family}/{m}" in times
                              and f"{family}/{m}" not in failed), None)
            if reference is not None and reference != name and mode in ENGINE_MODES:
                # the engine's modes draw the same random numbers: their images should agree token for token
                pairs = list(zip(outputs[name], outputs[reference]))
                equal = [(_tokens(a) == _tokens(b)).float().mean().item() for a, b in pairs]
                record[f"tokens_equal_to_{reference}"] = statistics.mean(equal) if equal else None
            stats = [o for o in outputs[name] if hasattr(o, "accepted_per_round")]
            if stats:
                pooled = pooled_statistics(stats)
                for key in ("alpha", "tokens_per_teacher_call", "tokens_per_image_round", "mean_gamma"):
                    record[key] = pooled[key]
                if "-g" in family:
                    record["gamma"] = int(family.rsplit("-g", 1)[1])
            records.append(record)
    draft_width = getattr(getattr(draft, "config", None), "hidden_size", config.hidden_size)  # a wide draft's own
    result = {
        "args": asdict(args), "machine": machine_description(device), "notes": notes, "records": records,
        "kv_cache_bytes_formula": "B x L x 2 x (teacher layers x its hidden + draft layers x its hidden) x dtype size "
                                  "(x2 rows with guidance)",
        "kv_cache_bytes": {str(B): B * config.max_position_embeddings * 2 * teacher.dtype.itemsize
                           * (config.num_hidden_layers * config.hidden_size + draft.num_layers * draft_width)
                           for B in args.batch_sizes},
        "elapsed_s": time.perf_counter() - started,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(json_safe(result), f, indent=1, allow_nan=False)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    lines = [f"Machine: {result['machine']}. Batch sizes interleaved method by method, medians over "
             f"{result['args']['reps']} calls.", "",
             "| method | batch | ms / call (p25-p75) | tokens/s | alpha | tokens / teacher call (per image) | speedup vs plain, same mode "
             "| speedup vs fastest plain | peak MiB | first call s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["records"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['batch_size']} | failed: {r['error']} | | | | | | | |")
            continue
        fmt = lambda key, spec: format(r[key], spec) if r.get(key) is not None else ""  # noqa: E731
        memory = f"{r['peak_memory_bytes'] / 2**20:.1f}" if r.get("peak_memory_bytes") is not None else ""
        batch = f"{r['batch_size']}" + (f" ({r['images']} images streamed)" if r.get("images", r["batch_size"]) != r["batch_size"] else "")
        lines.append(
            f"| {r['method']} | {batch} | {r['median_ms']:.2f} ({r['p25_ms']:.2f}-{r['p75_ms']:.2f}) | "
            f"{r['tokens_per_s']:.0f} | {fmt('alpha', '.3f')} | {tokens_per_call_cell(r)} | "
            f"{fmt('speedup_vs_plain_same_mode', '.2f')} | {fmt('speedup_vs_fastest_plain', '.2f')} | {memory} | "
            f"{fmt('first_call_s', '.2f')} |")
    for note in result["notes"]:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


@torch.inference_mode()
def check_engine(args: EngineBenchmarkArguments, modes: list[str]) -> dict:
    """Before timing on a device: for each execution mode, do greedy plain / speculative decoding equal
    `teacher.generate()` token for token (with and without guidance), and do sampled images equal the eager
    engine's for the same generator (same random numbers; float rounding may flip a rare near-tie)?"""
    device = torch.device(args.device)
    teacher = _load(args, args.teacher, "teacher")
    draft = _load_draft(args, teacher)
    config = teacher.config
    prompt = class_prompts(teacher, 3)
    new = config.max_position_embeddings - 1
    report = {}
    for cfg_scale in (None, 2.0):
        reference = teacher.generate(prompt, do_sample=False, cfg_scale=cfg_scale)
        for mode in modes:
            for name, d, gamma in (("plain", None, 0), ("speculative", draft, args.gamma)):
                decoder = get_decoder(teacher, d, gamma, 3, SamplingConfig(do_sample=False, cfg_scale=cfg_scale), mode)
                try:
                    out = decoder.generate(prompt, new)["sequences"]
                except Exception as error:  # report, and go on with the other modes
                    report[f"greedy {name}/{mode} cfg={cfg_scale}"] = f"{type(error).__name__}: {error}"[:500]
                    continue
                report[f"greedy {name}/{mode} cfg={cfg_scale} equals generate()"] = bool(torch.equal(out, reference))
                report[f"greedy {name}/{mode} cfg={cfg_scale}: fraction of tokens equal to generate()"] = (
                    (out == reference).float().mean().item())
    for mode in modes:
        for name, d, gamma in (("plain", None, 0), ("speculative", draft, args.gamma)):
            outs = []
            try:
                for m in ("eager", mode):
                    decoder = get_decoder(teacher, d, gamma, 3, SamplingConfig(), m)
                    outs.append(decoder.generate(prompt, new, torch.Generator(device=device).manual_seed(7))["sequences"])
            except Exception as error:
                report[f"sampled {name}/{mode}"] = f"{type(error).__name__}: {error}"[:500]
                continue
            report[f"sampled {name}/{mode}: fraction of tokens equal to eager"] = (outs[0] == outs[1]).float().mean().item()
    clear_decoders()
    return report
