"""The main job: a grid of every class, drawn with speculative decoding, timed against the teacher alone.

It reports the two speedups people mean, clearly apart:
- **per image (batch 1)**: the latency of drawing one image, each image drawn by the teacher alone and by the method
  back to back (same class, same seed), the median over the grid's images; the README's headline figure;
- **whole grid (one batch)**: the throughput of drawing every image of the grid in one call, the regime where the
  teacher alone already uses the hardware better, so speculative decoding gains less. With `--batch_size B` the
  grid's images are streamed through `B` rows instead (continuous batching: a row whose image is done takes the next
  one), for the teacher alone and for the method alike.

`scripts/generate.py` is its command line.
"""

import io
import os
import statistics
import warnings
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..cli import check_options_read
from ..hub import check_output_file, load_draft, load_pretrained
from ..images import labelled_grid
from ..models import VQGPTForCausalLM, VQTokenizer
from ..pipeline import (check_sampling_options, check_tokenizer_matches, class_prompts, decode_sequences,
                        recorded_class_names)
from ..speculative import EarlyExitDraft, check_draft_matches, plain_sample, pooled_statistics, speculative_sample
from ..speculative.checks import MODES, check_freeze_weights
from ..speculative.sampling import VERIFICATIONS
from .timing import check_device, time_interleaved


@dataclass(frozen=True)
class CheckpointSet:
    teacher: str
    assistant: str
    tokenizer: str
    description: str
    gamma: int  # the set's decoding defaults: the draft's acceptance decides how many tokens a round can afford
    verification: str


# The shipped checkpoint sets, by name (folders relative to the repository root, where the scripts run). Their
# decoding defaults: block verification (Sun et al. 2025) accepts at least as many tokens per round as token-wise
# at the same cost, and the photographs' weaker drafts (alpha ~0.7 against ~0.86) pay for shorter rounds; measured
# for each set on 2 CPU cores in BENCHMARKS.md ("The main job's defaults").
CHECKPOINT_SETS = {
    "digits": CheckpointSet("checkpoints/digits/teacher", "checkpoints/digits/draft-1L",
                            "checkpoints/digits/vq-tokenizer", "handwritten digits, 8x8 tokens, 10 classes",
                            gamma=6, verification="block"),
    "photos": CheckpointSet("checkpoints/photos/teacher", "checkpoints/photos/draft-1L",
                            "checkpoints/photos/vq-tokenizer", "crops of ten photographs, 8x8 tokens, 10 classes",
                            gamma=4, verification="block"),
    "photos-uncond": CheckpointSet("checkpoints/photos/teacher-uncond", "checkpoints/photos/draft-uncond-1L",
                                   "checkpoints/photos/vq-tokenizer", "crops of ten photographs, unconditional",
                                   gamma=4, verification="block"),
}

METHODS = ("speculative", "self-speculative", "assisted", "plain")
# The options that only some methods read.
METHOD_OPTIONS = {"assistant": ("speculative", "assisted"), "gamma": ("speculative", "self-speculative", "assisted"),
                  "self_speculative_layers": ("self-speculative",),
                  "batch_size": ("speculative", "self-speculative")}  # only their whole-grid timing reads it


@dataclass
class SampleGridArguments:
    checkpoints: str = field(default="digits", metadata={"help": f"Shipped checkpoint set: {' | '.join(CHECKPOINT_SETS)}. --teacher, --assistant and --tokenizer replace its parts."})
    teacher: str | None = field(default=None, metadata={"help": "Teacher folder or Hub repo id (default: the set's)."})
    assistant: str | None = field(default=None, metadata={"help": "Draft folder or Hub repo id (default: the set's)."})
    tokenizer: str | None = field(default=None, metadata={"help": "VQ tokenizer folder or Hub repo id (default: the set's)."})
    method: str = field(default="speculative", metadata={"help": "speculative | self-speculative | assisted (HF, one image per call) | plain."})
    classes: list[int] | None = field(default=None, metadata={"help": "Class ids to draw (default: all)."})
    samples_per_class: int = field(default=4, metadata={"help": "Images per class (per row)."})
    rows: int | None = field(default=None, metadata={"help": "Unconditional teachers: rows of samples_per_class images (default 4); a class-conditional teacher draws one row per class."})
    gamma: int | None = field(default=None, metadata={"help": f"Drafted tokens per round (default: the set's; {', '.join(f'{k} {v.gamma}' for k, v in CHECKPOINT_SETS.items())})."})
    verification: str | None = field(default=None, metadata={"help": "speculative / self-speculative: token (Leviathan et al.: each drafted token tested in turn) | block (Sun et al. 2025: the block tested jointly; as exact, never fewer tokens per teacher call at the same cost). Default: the set's (block) for speculative and self-speculative, token for assisted (transformers verifies token by token)."})
    self_speculative_layers: int | None = field(default=None, metadata={"help": "Teacher layers used as draft (self-speculative; default 2)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k (None = off)."})
    guidance_scale: float | None = field(default=None, metadata={"help": "Classifier-free guidance scale."})
    batch_size: int | None = field(default=None, metadata={"help": "Whole grid: rows decoded at once (default: every image in one batch); fewer streams the images through them, a row taking the next image when its own is done."})
    repeats: int = field(default=1, metadata={"help": "Passes of the per-image timing (each image, teacher then method, "
                                                       "every pass; medians over all passes, each pass's speedup reported): "
                                                       "on a noisy machine 3-5 give a steadier figure than one."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    mode: str = field(default="auto", metadata={"help": "Decoding engine mode for the teacher alone and speculative decoding: auto (CUDA graphs on a GPU, eager on the CPU) | eager | compile (faster on the CPU after about a minute of compilation per round shape the first time, cached on disk) | cuda-graph."})
    freeze_weights: bool = field(default=False, metadata={"help": "With --mode compile: the weights compiled in as constants (Inductor's C++ GEMM templates; plain decoding ~1.5x faster on 2 CPU cores, minutes of autotuned compilation per round shape the first time)."})
    output: str = field(default="samples.png", metadata={"help": "Where the PNG grid goes."})

    def __post_init__(self):
        if self.checkpoints not in CHECKPOINT_SETS:
            raise ValueError(f"`checkpoints` must be one of {', '.join(CHECKPOINT_SETS)}; got {self.checkpoints!r}.")
        shipped = CHECKPOINT_SETS[self.checkpoints]
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {', '.join(METHODS)}; got {self.method!r}.")
        # An option that the chosen method does not read is a mistake (a draft named with self-speculative decoding
        # was replaced by the teacher's first layers without a word), not something to ignore.
        check_options_read(self, "method", METHOD_OPTIONS)
        for name in ("teacher", "assistant", "tokenizer", "gamma"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(shipped, name))
        if self.self_speculative_layers is None:
            self.self_speculative_layers = 2
        if self.verification is None:
            self.verification = shipped.verification if self.method in ("speculative", "self-speculative") else "token"
        for name in ("samples_per_class", "rows", "gamma", "self_speculative_layers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.mode not in MODES:
            raise ValueError(f"`mode` must be one of {', '.join(MODES)}; got {self.mode!r}.")
        if self.verification not in VERIFICATIONS:
            raise ValueError(f"`verification` must be one of {', '.join(VERIFICATIONS)}; got {self.verification!r}.")
        if self.verification != "token" and self.method not in ("speculative", "self-speculative"):
            raise ValueError(f"`verification` {self.verification!r} is for `method` speculative or self-speculative; "
                             f"{self.method!r} {'verifies token by token (transformers)' if self.method == 'assisted' else 'drafts nothing'}.")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"`repeats` must be an integer >= 1 (passes of the per-image timing), got {self.repeats!r}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1 (or unset: every image in one batch), got {self.batch_size}.")
        device = check_device(self.device)
        if self.mode == "cuda-graph" and device.type != "cuda":  # what the engine refuses, before any model loads
            raise ValueError(f"`mode` cuda-graph needs a CUDA `device`, got {self.device!r}: use auto, eager or "
                             "compile there.")
        check_freeze_weights(self.freeze_weights, self.mode)
        check_output_file(self.output)
        extension = os.path.splitext(self.output)[1].lower()
        image_format = Image.registered_extensions().get(extension)
        if image_format is None:
            raise ValueError(f"`output` {self.output!r} needs an image file extension such as .png.")
        try:  # a tiny RGB picture, as the grid will be, before any sampling: Pillow reads more formats than it writes
            Image.new("RGB", (8, 8)).save(io.BytesIO(), format=image_format)
        except (KeyError, OSError, ValueError) as error:
            raise ValueError(f"`output` {self.output!r}: Pillow cannot write an RGB picture as {extension} "
                             f"({image_format}: {error}); use .png, .jpg, .webp or .bmp.") from None


def row_labels(teacher, classes: list[int]) -> list[str]:
    """Names for the grid's rows: the teacher's `id2label` where it was trained with class names, else `class c`."""
    names = recorded_class_names(teacher.config)
    return [names[c] if names else f"class {c}" for c in classes]


def run_sample_grid(args: SampleGridArguments) -> dict:
    """Draw the grid, time it two ways (module docstring) and write `args.output`.

    Every argument is checked against the teacher (the sampler's own `check_sampling_arguments`) before the other
    models load and before anything is drawn or timed. Returns `{"images", "method", "output", "alpha",
    "tokens_per_teacher_call", "per_image": {"teacher_ms", "method_ms", "speedup", "speedup_per_pass", "timed_calls"}, "whole_grid": {"batch_size",
    "teacher_seconds", "method_seconds", "speedup", "teacher_images_per_second", "method_images_per_second"}}`
    (`whole_grid` is None for `assisted`, which draws one image per call, and for `plain`).
    """
    teacher = load_pretrained(VQGPTForCausalLM, args.teacher, "teacher", args.device)
    if os.path.isfile(os.path.join(str(args.teacher), "distill_metrics.json")):  # ran, titled "speculative", silently
        warnings.warn(f"`teacher` {args.teacher!r} is a distilled draft (it holds distill_metrics.json): the grid and "
                      "the speedups are of that model as the teacher, not of the teacher it was distilled from.",
                      stacklevel=2)
    num_classes = teacher.config.num_classes
    if num_classes == 0:
        if args.classes:
            raise ValueError(f"`classes` {args.classes} given, but the teacher {args.teacher!r} is unconditional.")
        num_rows = args.rows or 4
        labels, nrow, rows = torch.zeros(num_rows * args.samples_per_class, dtype=torch.long), args.samples_per_class, ["unconditional"] * num_rows
    else:
        if args.rows is not None:
            raise ValueError(f"`rows` is for unconditional teachers: {args.teacher!r} draws one row per class "
                             "(choose them with `classes`, their length with `samples_per_class`).")
        classes = args.classes if args.classes is not None else list(range(num_classes))
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"`classes` {bad} are not classes of this teacher (0..{num_classes - 1}).")
        labels = torch.tensor(classes).repeat_interleave(args.samples_per_class)
        nrow, rows = args.samples_per_class, row_labels(teacher, classes)
    prompt = class_prompts(teacher, labels)
    sampling = dict(do_sample=True, temperature=args.temperature, top_k=args.top_k, cfg_scale=args.guidance_scale)
    generator = torch.Generator(device=args.device)
    check_sampling_options(teacher, {"cfg_scale": "guidance_scale"}, None if args.method == "plain" else args.gamma,
                           generator=generator, **sampling)
    draft = None
    if args.method == "self-speculative":
        draft = EarlyExitDraft(teacher, args.self_speculative_layers, argument="self_speculative_layers")
    tokenizer = load_pretrained(VQTokenizer, args.tokenizer, "tokenizer", args.device)
    check_tokenizer_matches(tokenizer, teacher.config)
    if args.method in ("speculative", "assisted"):
        draft = load_draft(args.assistant, "assistant", teacher, args.device)  # a VQGPT or a feature draft
        check_draft_matches(teacher, draft, argument="assistant")
        if draft.config.num_hidden_layers >= teacher.config.num_hidden_layers:
            warnings.warn(f"`assistant` has {draft.config.num_hidden_layers} layers, the teacher "
                          f"{teacher.config.num_hidden_layers}: a draft as deep as its teacher costs a teacher step per "
                          "drafted token and cannot make decoding faster.", stacklevel=2)
        if args.method == "assisted":
            if getattr(draft, "reads_features", False):
                raise ValueError(f"`assistant` {args.assistant!r} is a feature-conditioned draft: `--method assisted` "
                                 "(HF assisted generation) passes an assistant token ids only; use `--method speculative`.")
            draft.generation_config.num_assistant_tokens = args.gamma

    def teacher_alone(prompt):
        return plain_sample(teacher, prompt, generator=generator, mode=args.mode, batch_size=batch_size(prompt),
                            freeze_weights=args.freeze_weights, **sampling)

    def method(prompt):
        if args.method == "plain":
            return teacher_alone(prompt)
        if args.method == "assisted":  # HF assisted generation: its own seeding, one image per call
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
            return teacher.generate(prompt, assistant_model=draft, do_sample=True, temperature=args.temperature,
                                    top_k=args.top_k, cfg_scale=args.guidance_scale)
        return speculative_sample(teacher, draft, prompt, gamma=args.gamma, generator=generator, mode=args.mode,
                                  batch_size=batch_size(prompt), freeze_weights=args.freeze_weights,
                                  verification=args.verification, **sampling)

    def batch_size(prompt):  # the whole grid streams through `args.batch_size` rows; single images run alone
        return min(args.batch_size, len(prompt)) if args.batch_size else len(prompt)

    # Per image: each image drawn by the teacher alone and by the method back to back (image -1 is the warm-up),
    # `repeats` passes over the same images and seeds; the grid shows the first pass's images.
    inputs = [prompt[max(i, 0) : max(i, 0) + 1] for i in range(-1, len(labels))]
    seeds = [args.seed + i for i in range(-1, len(labels))]
    times = {"teacher": [], "method": []}
    passes = []
    for repeat in range(args.repeats):
        pass_times, outs = time_interleaved({"teacher": teacher_alone, "method": method}, inputs, seeds, generator,
                                            args.device)
        if repeat == 0:
            rows_out = outs["method"]
        passes.append(statistics.median(pass_times["teacher"]) / statistics.median(pass_times["method"]))
        for key in times:
            times[key] += pass_times[key]
    per_image = {"teacher_ms": 1000 * statistics.median(times["teacher"]),
                 "method_ms": 1000 * statistics.median(times["method"])}
    per_image["speedup"] = per_image["teacher_ms"] / per_image["method_ms"]
    per_image.update(speedup_per_pass=passes, timed_calls=len(times["method"]))
    whole_grid, outputs = None, rows_out
    if args.method in ("speculative", "self-speculative"):
        # Whole grid: one call each, after a first, untimed pair of calls at this batch size.
        times, outs = time_interleaved({"teacher": teacher_alone, "method": method}, [prompt, prompt],
                                       [args.seed, args.seed], generator, args.device)
        (t_teacher,), (t_method,), outputs = times["teacher"], times["method"], outs["method"]
        whole_grid = {"batch_size": batch_size(prompt), "streamed": batch_size(prompt) < len(labels),
                      "teacher_seconds": t_teacher, "method_seconds": t_method, "speedup": t_teacher / t_method, "teacher_images_per_second": len(labels) / t_teacher,
                      "method_images_per_second": len(labels) / t_method}
    sequences = torch.cat([out.sequences if hasattr(out, "sequences") else out for out in outputs])
    pooled = pooled_statistics(out for out in rows_out if hasattr(out, "alpha"))  # the per-image (batch 1) calls
    alpha, per_call = pooled["alpha"], pooled["tokens_per_teacher_call"]
    images = decode_sequences(tokenizer, sequences, teacher.config).clamp(-1, 1)
    block = ", block verification" if args.verification == "block" else ""
    what = {"speculative": f"speculative ({os.path.basename(args.assistant.rstrip('/'))}, gamma {args.gamma}{block})",
            "self-speculative": f"self-speculative ({args.self_speculative_layers} teacher layers, gamma {args.gamma}{block})",
            "assisted": f"HF assisted generation (gamma {args.gamma})", "plain": "teacher alone"}[args.method]
    title = f"{what}, T={args.temperature:g}" + (f": {per_image['speedup']:.2f}x per image" if args.method != "plain" else "")
    grid = labelled_grid(images, nrow, rows, title)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        grid.save(args.output)
    except OSError as error:  # e.g. a full disk, or a place that refuses writes only when written to
        raise ValueError(f"`output` {args.output!r} could not be saved ({type(error).__name__}: "
                         f"{error.strerror or error}); the grid was drawn and timed, but this run's image is lost: "
                         f"give another `output`. The speedup was {per_image['speedup']:.2f}x per image.") from None
    return {"images": len(labels), "method": args.method, "verification": args.verification,
            "output": args.output, "alpha": alpha,
            "tokens_per_teacher_call": per_call, "per_image": per_image, "whole_grid": whole_grid}
