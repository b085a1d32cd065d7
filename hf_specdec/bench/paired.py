"""Paired batch-1 benchmark: plain decoding and speculative decoding with each draft, interleaved image by image.

`bench.speed` runs every setting as its own block of images, so drift of a shared machine between blocks moves the
ratios (one H100 run measured the plain loop at 395 ms per image, the next at 273 ms). Here every image is drawn by
every method back to back, with the same seed and class, the device synchronised around each call, over `reps`
images; the speedup is the ratio of medians. `scripts/paired_benchmark.py` is its command line.
"""

import copy
import statistics
from types import SimpleNamespace

import torch

from ..hub import load_draft, load_pretrained
from ..models import VQGPTForCausalLM
from ..pipeline import class_prompts
from ..speculative import SamplingConfig, SpeculativeDecoder, SpeculativeOutput, pooled_statistics
from .timing import check_device, check_listed_once, time_interleaved

DTYPES = ("float32", "bfloat16", "float16")


def paired_benchmark(device: str, reps: int, drafts: dict[str, str], teacher_path: str = "checkpoints/digits/teacher",
                     block_gamma: int | None = None, mode: str = "auto", gammas: tuple[int, ...] = (6, 8),
                     num_drafts: tuple[int, ...] = (), python_wrapper: bool = False, frozen: bool = False,
                     dynamo_guards: bool = False, dtype: str = "float32", also_dtype: str | None = None) -> dict:
    """Time plain decoding and, for each draft `{name: folder or Hub id}`, speculative decoding at each of `gammas`
    and with adaptive gamma (up to the largest), one image per call, over `reps` images (plus one warm-up image).

    Args:
        teacher_path: the teacher (folder or Hub id); the drafts must match its codebook, classes and grid.
        block_gamma: also speculative decoding with block verification (Sun et al. 2025) at this gamma.
        num_drafts: also multi-draft verification (SpecInfer) with each of these numbers of chains, at the largest
            gamma.
        mode: the engine's mode for every method (`auto`: eager on the CPU, CUDA graphs on a GPU; `compile`).
        python_wrapper: with `mode="compile"` on the CPU, also plain decoding and each draft's largest fixed gamma
            (block verification when `block_gamma` is set) compiled with Inductor's Python wrapper instead of its C++
            one (`... python-wrapper` methods): what the C++ wrapper gains, in the same run.
        frozen: with `mode="compile"` on the CPU, also plain decoding and each draft's block verification (or largest
            fixed gamma) with the weights compiled in as constants (`compile_options={"freeze_weights": True}`;
            `... frozen` methods); speedups stay against the default plain loop, compare `plain frozen` yourself.
        dynamo_guards: with `mode="compile"`, also plain decoding, each draft's block verification (when set) and
            largest fixed gamma compiled with dynamo's guards checked before every round (`compile_options=
            {"skip_guards": False}`; `... dynamo-guards` methods): what skipping them gains, in the same run.
        dtype: the models' dtype for every method (`float32`, `bfloat16` or `float16`); the checkpoints are cast
            after loading.
        also_dtype: also plain decoding and each draft's block verification (when set) and largest fixed gamma with
            the models cast to this dtype (`... bfloat16` methods), in the same run; speedups stay against the plain
            loop in `dtype`. Each dtype samples its own teacher's distribution: lossless against that teacher.

    Returns `{"device", "reps", "drafts", "teacher", "mode", "results": {method: {"median_ms", "speedup_vs_plain",
    "alpha", "tokens_per_teacher_call"}}}`.
    """
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"`reps` must be an integer >= 1, got {reps!r}.")
    if not gammas or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in gammas):
        raise ValueError(f"`gammas` must be integers >= 1, got {gammas!r}.")
    if block_gamma is not None and (isinstance(block_gamma, bool) or not isinstance(block_gamma, int) or block_gamma < 1):
        raise ValueError(f"`block_gamma` must be an integer >= 1 (or None: no block verification), got {block_gamma!r}.")
    if any(isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 16 for k in num_drafts):
        raise ValueError(f"`num_drafts` must be integers in [2, 16], got {num_drafts!r}.")
    # the same method twice gave one result row, and the JSON listed both
    check_listed_once(SimpleNamespace(gammas=list(gammas), num_drafts=list(num_drafts)), "gammas", "num_drafts")
    if not drafts:
        raise ValueError("`drafts` is empty: give at least one name=path.")
    on_cpu = check_device(device).type == "cpu"
    if python_wrapper and not (on_cpu and mode == "compile"):
        raise ValueError("`python_wrapper` compares Inductor's wrappers: it needs mode compile on the CPU.")
    if dynamo_guards and mode != "compile":
        raise ValueError("`dynamo_guards` compares compiled rounds with and without dynamo's guards: it needs mode "
                         "compile.")
    if frozen and not (on_cpu and mode == "compile"):
        raise ValueError("`frozen` compiles the weights into Inductor's CPU GEMM templates: it needs mode compile on "
                         "the CPU.")
    for argument, value in (("dtype", dtype), ("also_dtype", also_dtype)):
        if value is not None and value not in DTYPES:
            raise ValueError(f"`{argument}` must be one of {', '.join(DTYPES)}, got {value!r}.")
    if also_dtype == dtype:
        raise ValueError(f"`also_dtype` adds methods in another dtype than `dtype` ({dtype}): give another one.")
    teacher = load_pretrained(VQGPTForCausalLM, teacher_path, "teacher_path", device).to(getattr(torch, dtype))
    grid = teacher.config.num_image_tokens
    for argument, values in (("gammas", gammas), ("block_gamma", [block_gamma] if block_gamma else [])):
        if any(value > grid for value in values):
            raise ValueError(f"`{argument}` must be at most the teacher's {grid}-token grid, got {list(values)}.")
    models = {name: load_draft(path, f"draft {name}", teacher, device).to(getattr(torch, dtype))
              for name, path in drafts.items()}
    g = torch.Generator(device=device)

    def decoder_method(draft, gamma=0, adaptive=False, compile_options=None, target=None, **sampling):
        # Each method holds its own decoder: through the shared cache (`get_decoder`, the last 8 settings) more
        # than 8 interleaved settings would evict and rebuild one another on every image.
        decoder = SpeculativeDecoder(teacher if target is None else target, draft, gamma, 1, SamplingConfig(**sampling), mode,
                                     compile_options=compile_options)
        if draft is None:
            return lambda prompt: decoder.generate(prompt, generator=g)["sequences"]
        return lambda prompt: SpeculativeOutput.from_record(
            decoder.generate(prompt, generator=g, adaptive_gamma=adaptive), prompt.shape[1])

    methods = {"plain": decoder_method(None)}
    for name, draft in models.items():
        for gamma in gammas:
            methods[f"{name} g{gamma}"] = decoder_method(draft, gamma)
        methods[f"{name} adaptive"] = decoder_method(draft, max(gammas), adaptive=True)
        if block_gamma:
            methods[f"{name} block g{block_gamma}"] = decoder_method(draft, block_gamma, verification="block")
        for k in num_drafts:
            methods[f"{name} {k} chains g{max(gammas)}"] = decoder_method(draft, max(gammas), num_drafts=k)
    def add_variant(suffix, compile_options, fixed_gamma_too, target=None, drafts_of_target=None):
        """Plain decoding and each draft's block verification (when `block_gamma` is set) and/or largest fixed gamma,
        compiled with `compile_options` (with `target` and its drafts when given), as `... {suffix}` methods."""
        methods[f"plain {suffix}"] = decoder_method(None, compile_options=compile_options, target=target)
        for name, draft in (drafts_of_target or models).items():
            if block_gamma:
                methods[f"{name} block g{block_gamma} {suffix}"] = decoder_method(
                    draft, block_gamma, compile_options=compile_options, target=target, verification="block")
            if fixed_gamma_too or not block_gamma:
                methods[f"{name} g{max(gammas)} {suffix}"] = decoder_method(
                    draft, max(gammas), compile_options=compile_options, target=target)

    if python_wrapper:
        add_variant("python-wrapper", {"options": {"cpp_wrapper": False}}, fixed_gamma_too=False)
    if frozen:
        add_variant("frozen", {"freeze_weights": True}, fixed_gamma_too=True)
    if dynamo_guards:
        add_variant("dynamo-guards", {"skip_guards": False}, fixed_gamma_too=True)
    if also_dtype:
        cast = copy.deepcopy(teacher).to(getattr(torch, also_dtype))
        cast_drafts = {name: cast_draft(draft, cast, getattr(torch, also_dtype)) for name, draft in models.items()}
        add_variant(also_dtype, None, fixed_gamma_too=True, target=cast, drafts_of_target=cast_drafts)
    # Image -1 is the warm-up; the class cycles with the image.
    prompts = [class_prompts(teacher, 1, first=rep) for rep in range(-1, reps)]
    times, outputs = time_interleaved(methods, prompts, [1000 + rep for rep in range(-1, reps)], g, device)
    base = statistics.median(times["plain"])
    results = {}
    for k, v in times.items():
        pooled = pooled_statistics(out for out in outputs[k] if hasattr(out, "alpha"))
        results[k] = {"median_ms": 1000 * statistics.median(v), "speedup_vs_plain": base / statistics.median(v),
                      "alpha": pooled["alpha"], "tokens_per_teacher_call": pooled["tokens_per_teacher_call"]}
    device_name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"  # `cuda:1` too
    return {"device": device_name, "reps": reps, "drafts": drafts, "teacher": teacher_path, "mode": mode, "gammas": list(gammas),
            "num_drafts": list(num_drafts), "python_wrapper": python_wrapper, "frozen": frozen,
            "dynamo_guards": dynamo_guards, "dtype": dtype, "also_dtype": also_dtype, "results": results}


def cast_draft(draft, teacher, dtype: torch.dtype):
    """A copy of `draft` in `dtype`; a feature draft is attached to `teacher` (already in `dtype`) instead of a copy
    of its own teacher."""
    if getattr(draft, "reads_features", False):
        return copy.deepcopy(draft, {id(draft.teacher): teacher}).to(dtype).attach_teacher(teacher)
    return copy.deepcopy(draft).to(dtype)
