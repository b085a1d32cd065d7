"""The one synchronised timer of the benchmarks and the main job."""

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm


def check_device(device, name: str = "device") -> torch.device:
    """`device` as a `torch.device` this machine has, or a ValueError naming the argument `name`: cpu, cuda (an index
    below the number of GPUs) or mps, each only where available."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"`{name}` must be cpu, cuda, cuda:<index> or mps, got {device!r}.")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`{name}` is {device!r} but no CUDA device is available.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"`{name}` is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s).")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"`{name}` is {device!r} but MPS is not available.")
    return parsed


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def machine_description(device: str | torch.device) -> str:
    """The machine a benchmark ran on, for its report: the GPU's name, or the CPU with its core and thread counts."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} "
            f"torch threads (torch {torch.__version__})")


def time_calls(fn: Callable, repeats: int, warmup: int, device: str) -> tuple[list[float], list]:
    """Run `fn` `warmup` times untimed, then `repeats` times timed, the device synchronised around each timed call.

    Returns `(seconds per timed call, their results)`.
    """
    for _ in range(warmup):
        fn()
    seconds, results = [], []
    for _ in range(repeats):
        synchronize(device)
        tic = time.perf_counter()
        results.append(fn())
        synchronize(device)
        seconds.append(time.perf_counter() - tic)
    return seconds, results


def time_interleaved(methods: dict[str, Callable], inputs: list, seeds: list[int], generator: torch.Generator,
                     device: str) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Call every method `fn(input)` on each input back to back, `generator` re-seeded with that input's seed before
    each call and the device synchronised around it, so that drift of a shared machine cancels in the ratios. The
    first input is a warm-up: called, neither timed nor returned.

    Returns `(seconds per method, outputs per method)`, one entry per input after the first.
    """
    seconds, outputs = {k: [] for k in methods}, {k: [] for k in methods}
    pairs = list(zip(inputs, seeds, strict=True))
    for i, (x, seed) in enumerate(tqdm(pairs, desc=f"images x {len(methods)} methods", leave=False)):
        for k, fn in methods.items():
            generator.manual_seed(seed)
            (dt,), (out,) = time_calls(lambda: fn(x), repeats=1, warmup=0, device=device)
            if i:
                seconds[k].append(dt)
                outputs[k].append(out)
    return seconds, outputs


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """`(p25, median, p75)` of `values` (all three equal for a single value)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def check_not_empty(args, *names: str) -> None:
    """`ValueError` naming the list option (only a config file can give `[]`) that would leave no row to time: an
    empty table, or a failure after the models loaded."""
    for name in names:
        if not getattr(args, name):
            raise ValueError(f"`{name}` is empty: give at least one value (or leave it out for the default).")


def check_listed_once(args, *names: str) -> None:
    """`ValueError` naming the option when one of the list options `names` of `args` gives a value twice: a row
    timed twice looks like two results."""
    for name in names:
        values = getattr(args, name)
        if len(set(values)) < len(values):
            twice = sorted({v for v in values if values.count(v) > 1})
            raise ValueError(f"`{name}` lists {twice} more than once: give each value once.")


def tokens_per_call_cell(record: dict) -> str:
    """Tokens per teacher call for a row, and in brackets per image where rows waited for a batch's slowest one."""
    if record.get("tokens_per_teacher_call") is None:
        return ""
    per_row, per_image = record["tokens_per_teacher_call"], record.get("tokens_per_image_round")
    return f"{per_row:.2f}" + (f" ({per_image:.2f})" if per_image is not None and f"{per_image:.2f}" != f"{per_row:.2f}" else "")
