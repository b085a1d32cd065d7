"""The main job: a grid of every class, drawn with speculative decoding, timed against the teacher alone.

`scripts/generate.py` is its command line.
"""

import os
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..hub import load_pretrained
from ..images import save_image_grid
from ..models import VQGPTForCausalLM, VQTokenizer
from ..pipeline import check_sampling_options, check_tokenizer_matches, class_prompts, decode_sequences
from ..speculative import EarlyExitDraft, check_draft_matches, plain_sample, speculative_sample
from .timing import time_calls

METHODS = ("speculative", "self-speculative", "assisted", "plain")


@dataclass
class SampleGridArguments:
    teacher: str = field(default="checkpoints/digits/teacher", metadata={"help": "Teacher folder or Hub repo id."})
    assistant: str = field(default="checkpoints/digits/draft-1L", metadata={"help": "Draft folder or Hub repo id."})
    tokenizer: str = field(default="checkpoints/digits/vq-tokenizer", metadata={"help": "VQ tokenizer folder or Hub repo id."})
    method: str = field(default="speculative", metadata={"help": "speculative | self-speculative | assisted (HF, one image per call) | plain."})
    classes: list[int] | None = field(default=None, metadata={"help": "Class ids to draw (default: all)."})
    samples_per_class: int = field(default=4, metadata={"help": "Images per class."})
    gamma: int = field(default=6, metadata={"help": "Drafted tokens per round."})
    self_speculative_layers: int = field(default=2, metadata={"help": "Teacher layers used as draft (self-speculative)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k (None = off)."})
    guidance_scale: float | None = field(default=None, metadata={"help": "Classifier-free guidance scale."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    output: str = field(default="samples.png", metadata={"help": "Where the PNG grid goes."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {', '.join(METHODS)}; got {self.method!r}.")
        for name in ("samples_per_class", "gamma", "self_speculative_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("`device` is cuda but no CUDA device is available.")
        if os.path.splitext(self.output)[1].lower() not in Image.registered_extensions():
            raise ValueError(f"`output` {self.output!r} needs an image file extension such as .png.")


def run_sample_grid(args: SampleGridArguments) -> dict:
    """Draw the grid; returns timings, speedup and acceptance (and writes `args.output`).

    Every argument is checked against the teacher (the sampler's own `check_sampling_arguments`) before the other
    models load and before anything is drawn or timed.
    """
    teacher = load_pretrained(VQGPTForCausalLM, args.teacher, "teacher", args.device)
    num_classes = teacher.config.num_classes
    classes = args.classes if args.classes is not None else list(range(num_classes))
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"`classes` {bad} are not classes of this teacher (0..{num_classes - 1}).")
    labels = torch.tensor(classes).repeat_interleave(args.samples_per_class)
    prompt = class_prompts(teacher, labels)
    sampling = dict(do_sample=True, temperature=args.temperature, top_k=args.top_k, cfg_scale=args.guidance_scale)
    generator = lambda: torch.Generator(device=args.device).manual_seed(args.seed)  # noqa: E731
    check_sampling_options(teacher, {"cfg_scale": "guidance_scale"}, None if args.method == "plain" else args.gamma,
                           generator=generator(), **sampling)
    draft = None
    if args.method == "self-speculative":
        try:
            draft = EarlyExitDraft(teacher, args.self_speculative_layers)
        except ValueError as error:
            raise ValueError(str(error).replace("`num_layers`", "`self_speculative_layers`")) from None
    tokenizer = load_pretrained(VQTokenizer, args.tokenizer, "tokenizer", args.device)
    check_tokenizer_matches(tokenizer, teacher.config)
    if args.method in ("speculative", "assisted"):
        draft = load_pretrained(VQGPTForCausalLM, args.assistant, "assistant", args.device)
        check_draft_matches(teacher, draft, argument="assistant")

    def timed(fn):
        plain_sample(teacher, prompt[:1], max_new_tokens=2)  # warm-up
        (seconds,), (out,) = time_calls(fn, repeats=1, warmup=0, device=args.device)
        return out, seconds

    plain, plain_seconds = timed(lambda: plain_sample(teacher, prompt, generator=generator(), **sampling))
    result = {"teacher_seconds": plain_seconds, "images": len(labels)}
    if args.method == "plain":
        sequences, seconds, alpha = plain, plain_seconds, None
    elif args.method == "assisted":
        draft.generation_config.num_assistant_tokens = args.gamma
        torch.manual_seed(args.seed)
        rows, seconds = timed(lambda: [teacher.generate(p[None], assistant_model=draft, do_sample=True, temperature=args.temperature, top_k=args.top_k, cfg_scale=args.guidance_scale) for p in prompt])
        sequences, alpha = torch.cat(rows), None
    else:
        out, seconds = timed(lambda: speculative_sample(teacher, draft, prompt, gamma=args.gamma, generator=generator(), **sampling))
        sequences, alpha = out.sequences, out.alpha
    images = decode_sequences(tokenizer, sequences, teacher.config)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_image_grid(images, args.output, nrow=args.samples_per_class if len(classes) > 1 else 8)
    result.update(method=args.method, seconds=seconds, speedup=plain_seconds / seconds, alpha=alpha, output=args.output)
    return result
