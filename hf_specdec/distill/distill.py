"""Distilling drafts from the teacher: the seed's hybrid loss, and on-policy distillation (GKD / DistillSpec).

A batch's sequences come from one of three places: the real token data, sequences sampled from the teacher
(`data_source="teacher"`, sequence-level KD), or - with probability `lmbda` - the student's own samples
(on-policy, Agarwal et al. 2024; Zhou et al. 2024). The teacher labels every position with its distribution and
the student is trained on a divergence to it. The metric that predicts speculative speed, the expected acceptance
`alpha = E[sum_x min(p(x), q(x))]`, is measured on held-out teacher rollouts with `p` and `q` processed exactly as
at generation time.
"""

import json
import math
import os
import random
import warnings
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..cli import check_options_read
from ..data import collate_tokens, drop_class, token_splits
from ..hub import check_output_not_input, json_safe, load_pretrained
from ..models import STUDENT_IDS, VQGPT_PRESETS, VQGPTForCausalLM, VQTokenizer, make_feature_draft
from ..models.modeling_vqgpt import check_cfg_scale
from ..pipeline import (check_dataset_matches, check_sampling_options, check_tokenizer_matches, class_prompts,
                        weights_fingerprint)
from ..speculative import acceptance_alpha, warp_logits
from .losses import DIVERGENCES, divergence, forward_kl, hybrid_distillation_loss


# The loss settings that only some losses read.
LOSS_OPTIONS = {"alpha": ("hybrid",), "kd_temperature": ("hybrid",), "beta": ("jsd",),
                "kl_weight": tuple(DIVERGENCES)}


@dataclass
class DistillArguments:
    EXCLUSIVE_FIELDS = (("student_id", "student_preset", "student_layers"),)  # the student's size

    teacher_path: str = field(default="checkpoints/digits/teacher", metadata={"help": "Trained teacher folder or Hub id."})
    tokenizer_path: str = field(default="checkpoints/digits/vq-tokenizer", metadata={"help": "The teacher's tokenizer."})
    student_id: int | None = field(default=None, metadata={"help": "The seed's numbering: 1=10L 2=8L 3=6L 4=4L."})
    student_preset: str | None = field(default=None, metadata={"help": "A size preset instead, e.g. draft-1L."})
    student_layers: int | None = field(default=None, metadata={"help": "A custom depth instead of a preset."})
    init_from_teacher: bool = field(default=True, metadata={"help": "Initialise from teacher layers (see teacher_layers)."})
    teacher_layers: list[int] | None = field(default=None, metadata={"help": "Teacher blocks to copy (default: evenly spaced)."})
    draft_intermediate_size: int | None = field(default=None, metadata={"help": "MLP width of the student (default: the "
        "teacher's). Wider starts as the teacher's block, the extra units' outputs at zero: more capacity at the same depth."})
    draft_hidden_size: int | None = field(default=None, metadata={"help": "feature_draft: width of the draft "
        "(default: the teacher's; a multiple of it). Wider starts as the teacher's blocks tiled (Net2WiderNet)."})
    loss: str = field(default="hybrid", metadata={"help": "hybrid | forward_kl | reverse_kl | jsd | tv."})
    alpha: float = field(default=0.5, metadata={"help": "hybrid: weight of the hard cross-entropy term."})
    kd_temperature: float = field(default=2.0, metadata={"help": "hybrid: distillation temperature T."})
    beta: float = field(default=0.5, metadata={"help": "jsd: interpolation beta."})
    kl_weight: float = field(default=0.0, metadata={"help": "Extra forward-KL term added to a tv/jsd/reverse_kl loss."})
    lmbda: float = field(default=0.0, metadata={"help": "Probability that a batch is the student's own samples (on-policy)."})
    data_source: str = field(default="real", metadata={"help": "real | teacher: off-policy sequences from data or teacher samples."})
    num_teacher_samples: int = field(default=4096, metadata={"help": "Teacher samples drawn once when data_source=teacher."})
    gen_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the generation setting."})
    gen_top_k: int | None = field(default=None, metadata={"help": "Top-k of the generation setting (None = off)."})
    cfg_scale: float | None = field(default=None, metadata={"help": "Guidance scale of the generation setting."})
    num_alpha_prefixes: int = field(default=256, metadata={"help": "Held-out teacher rollouts for measuring alpha."})
    feature_draft: bool = field(default=False, metadata={"help": "Train a draft that reads the teacher's features (EAGLE-3 style)."})
    feature_layers: list[int] | None = field(default=None, metadata={"help": "feature_draft: teacher hidden states fused (default low, middle, top)."})
    ttt_steps: int = field(default=2, metadata={"help": "feature_draft: draft steps unrolled in training (training-time test)."})

    def __post_init__(self):
        chosen = [x is not None for x in (self.student_id, self.student_preset, self.student_layers)]
        if sum(chosen) != 1:
            raise ValueError("Give exactly one of `student_id`, `student_preset`, `student_layers`.")
        if self.student_id is not None and self.student_id not in STUDENT_IDS:
            raise ValueError(f"`student_id` must be one of {sorted(STUDENT_IDS)}, got {self.student_id}.")
        if self.loss != "hybrid" and self.loss not in DIVERGENCES:
            raise ValueError(f"`loss` must be hybrid or one of {sorted(DIVERGENCES)}, got {self.loss!r}.")
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"`lmbda` must be in [0, 1], got {self.lmbda}.")
        if self.data_source not in ("real", "teacher"):
            raise ValueError(f"`data_source` must be real or teacher, got {self.data_source!r}.")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError(f"`student_layers` must be >= 1, got {self.student_layers}.")
        for name in ("alpha", "beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {getattr(self, name)}.")
        for name in ("kd_temperature", "gen_temperature"):  # below 0.01 the losses' targets are one-hot: NaN
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0.01):
                raise ValueError(f"`{name}` must be a finite number >= 0.01, got {getattr(self, name)}.")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"`kl_weight` must be a finite number >= 0, got {self.kl_weight}.")
        check_cfg_scale(self.cfg_scale)
        if self.feature_draft and self.lmbda > 0:
            raise ValueError("`lmbda` must be 0 with `feature_draft`: a feature draft cannot sample on its own (it "
                             "reads the teacher's features); train it on teacher samples (data_source=teacher).")
        if self.feature_draft and self.loss == "hybrid":
            raise ValueError(f"`loss` must be one of {sorted(DIVERGENCES)} with `feature_draft`, got 'hybrid'.")
        check_options_read(self, "loss", LOSS_OPTIONS)  # a setting the loss does not read is a mistake, not ignored
        check_options_read(self, "feature_draft", {"ttt_steps": (True,), "feature_layers": (True,)})
        check_options_read(self, "data_source", {"num_teacher_samples": ("teacher",)})
        if self.teacher_layers is not None and not self.init_from_teacher:
            raise ValueError("`teacher_layers` picks the teacher blocks to copy, but `init_from_teacher` is false: "
                             "nothing is copied. Drop one of them.")
        if self.student_preset is not None and self.student_preset not in VQGPT_PRESETS:
            raise ValueError(f"`student_preset` must be one of {sorted(VQGPT_PRESETS)}, got {self.student_preset!r}.")
        # What needs no model is checked here, before the teacher loads (the ranges that need it, after).
        if self.gen_top_k is not None and (isinstance(self.gen_top_k, bool) or self.gen_top_k < 1):
            raise ValueError(f"`gen_top_k` must be a positive integer or None (off), got {self.gen_top_k}.")
        for name in ("teacher_layers", "feature_layers"):
            layers = getattr(self, name)
            if layers is not None and (not layers or min(layers) < 0):
                raise ValueError(f"`{name}` must be a non-empty list of layer indices >= 0, got {layers}.")
        depth = self.student_depth if isinstance(self.student_depth, int) else \
            VQGPT_PRESETS[self.student_depth]["num_hidden_layers"]
        if self.teacher_layers is not None and len(self.teacher_layers) != depth:
            raise ValueError(f"`teacher_layers` must list {depth} indices, one per student layer, got "
                             f"{self.teacher_layers}.")
        if self.draft_intermediate_size is not None and self.draft_intermediate_size < 1:
            raise ValueError(f"`draft_intermediate_size` must be a positive integer, got {self.draft_intermediate_size}.")
        if self.draft_hidden_size is not None and not self.feature_draft:
            raise ValueError("`draft_hidden_size` is read by feature drafts only (`feature_draft: true`); a token-only "
                             "student has its teacher's width.")
        if self.draft_hidden_size is not None and (isinstance(self.draft_hidden_size, bool) or self.draft_hidden_size < 1):
            raise ValueError(f"`draft_hidden_size` must be a positive integer, got {self.draft_hidden_size}.")
        for name in ("num_teacher_samples", "num_alpha_prefixes", "ttt_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")

    @property
    def student_depth(self) -> str | int:
        if self.student_id is not None:
            return STUDENT_IDS[self.student_id]
        return self.student_preset if self.student_preset is not None else self.student_layers

    @property
    def generation_kwargs(self) -> dict:
        return {"temperature": self.gen_temperature, "top_k": self.gen_top_k, "cfg_scale": self.cfg_scale}


def make_student(teacher: VQGPTForCausalLM, depth: str | int, teacher_layers: list[int] | None = None, init: bool = True,
                 intermediate_size: int | None = None):
    """A student with the teacher's width and vocabulary (MLP width `intermediate_size`, default the teacher's);
    optionally initialised from teacher blocks.

    `teacher_layers` picks the teacher blocks to copy (default: evenly spaced, first and last included; a wider MLP
    as in `VQGPTBlock.copy_from`); the embeddings, final norm and head are always copied when `init`.
    """
    config = teacher.config.student_config(depth, intermediate_size)
    student = VQGPTForCausalLM(config)
    if not init:
        return student
    n_student, n_teacher = config.num_hidden_layers, teacher.config.num_hidden_layers
    if teacher_layers is None:
        teacher_layers = [round(i * (n_teacher - 1) / max(n_student - 1, 1)) for i in range(n_student)]
    if len(teacher_layers) != n_student or not all(0 <= i < n_teacher for i in teacher_layers):
        raise ValueError(f"`teacher_layers` must list {n_student} indices in [0, {n_teacher}), got {teacher_layers}.")
    for name in ("wte", "wpe", "ln_f"):
        getattr(student.transformer, name).load_state_dict(getattr(teacher.transformer, name).state_dict())
    student.lm_head.load_state_dict(teacher.lm_head.state_dict())
    for target, source in enumerate(teacher_layers):
        student.transformer.h[target].copy_from(teacher.transformer.h[source])
    return student


def make_draft(args: "DistillArguments", teacher: VQGPTForCausalLM):
    """The student `args` asks for: a VQGPT of `student_depth`, or a feature draft of that depth."""
    config = teacher.config
    width = args.draft_hidden_size
    if width is not None and width % config.hidden_size:  # before the MLP width, which is a multiple of it
        raise ValueError(f"`draft_hidden_size` must be a multiple of the teacher's hidden_size ({config.hidden_size}),"
                         f" got {width}.")
    least = config.intermediate_size * ((width or config.hidden_size) // config.hidden_size)
    if args.init_from_teacher and args.draft_intermediate_size is not None and args.draft_intermediate_size < least:
        raise ValueError(f"`draft_intermediate_size` must be >= {least} to start from the teacher's blocks (their MLP "
                         f"width{', tiled' if least > config.intermediate_size else ''}), got "
                         f"{args.draft_intermediate_size}; or set `init_from_teacher` false.")
    if not args.feature_draft:
        return make_student(teacher, args.student_depth, args.teacher_layers, args.init_from_teacher,
                            args.draft_intermediate_size)
    depth = args.student_depth
    depth = VQGPT_PRESETS[depth]["num_hidden_layers"] if isinstance(depth, str) else depth
    return make_feature_draft(teacher, depth, args.feature_layers, args.init_from_teacher, args.teacher_layers,
                              args.draft_intermediate_size, args.draft_hidden_size)


def processed_probs(model, ids: torch.Tensor, temperature=1.0, top_k=None, cfg_scale=None, step: int = 1) -> torch.Tensor:
    """Next-code probabilities `(B, T-1, K)` at every position, processed as `generate()` would. A feature draft
    reads the teacher's features (`step=1`, its first draft of a round) or its own (`step=k`: the k-th)."""
    if getattr(model, "reads_features", False):
        logits = model.unrolled_logits(ids, step, cfg_scale)[-1][:, :-1]
    else:
        logits = model(ids, cfg_scale=cfg_scale, use_cache=False).logits[:, :-1]
    return warp_logits(logits, temperature, top_k).softmax(-1)


@torch.no_grad()
def expected_acceptance(teacher, student, sequences: torch.Tensor, batch_size: int = 128, **generation) -> dict:
    """`alpha = mean over positions of sum_x min(p, q)` on `sequences` `(N, 1 + h*w)`, and alpha per grid position.
    For a feature draft, `alpha` is its first draft step's (teacher features) and `alpha_own_features` its second's
    (its own features), the two regimes of a round."""
    device = next(student.parameters()).device
    per_position, own = [], []
    feature_draft = getattr(student, "reads_features", False)
    for i in range(0, len(sequences), batch_size):
        ids = sequences[i : i + batch_size].to(device)
        p = processed_probs(teacher, ids, **generation)
        per_position.append(acceptance_alpha(p, processed_probs(student, ids, **generation)))
        if feature_draft:
            own.append(acceptance_alpha(p, processed_probs(student, ids, **generation, step=2)))
    alpha = torch.cat(per_position)  # (N, h*w)
    result = {"alpha": alpha.mean().item(), "alpha_by_position": alpha.mean(0).cpu()}
    if feature_draft:
        result["alpha_own_features"] = torch.cat(own).mean().item()
    return result


@torch.no_grad()
def predictive_entropy(model, sequences: torch.Tensor, batch_size: int = 128, **generation) -> float:
    """Mean entropy in nats of `model`'s next-code distribution (processed as at generation time) over every position
    of `sequences` `(N, 1 + h*w)`. On the model's own samples it measures how flat its distributions are, the
    regime that bounds a draft's acceptance: natural images give far higher entropy per token than digits."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(sequences), batch_size):
        p = processed_probs(model, sequences[i : i + batch_size].to(device), **generation)
        total += -(p * p.clamp_min(1e-30).log()).sum(-1).sum().item()
        count += p.shape[0] * p.shape[1]
    return total / max(count, 1)


@torch.no_grad()
def sample_sequences(model, prompts: torch.Tensor, batch_size: int = 256, seed: int = 0, **generation) -> torch.Tensor:
    """Full token sequences sampled from `model` after `prompts` `(N, 1)` (class or null tokens).

    Uses its own seed without touching the caller's random state (training stays reproducible on resume).
    """
    was_training = model.training
    model.eval()
    out = []
    devices = [prompts.device] if prompts.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in tqdm(range(0, len(prompts), batch_size), desc="sampling", disable=len(prompts) <= batch_size):
            out.append(
                model.generate(prompts[i : i + batch_size], do_sample=True, temperature=generation.get("temperature", 1.0),
                               top_k=generation.get("top_k"), cfg_scale=generation.get("cfg_scale"))
            )
    model.train(was_training)
    return torch.cat(out)


def distillation_loss(args: DistillArguments, teacher, student, ids: torch.Tensor):
    """The configured loss on sequences `ids` `(B, 1 + h*w)`: teacher labels every position (no gradient). A feature
    draft is scored on each of its `ttt_steps` unrolled draft steps (the mean)."""
    with torch.no_grad():
        out = teacher(ids, use_cache=False, output_hidden_states=args.feature_draft)
        teacher_logits = out.logits[:, :-1]
    if args.feature_draft:
        unrolled = student(ids, teacher_hidden_states=out.hidden_states, steps=args.ttt_steps).unrolled_logits
        return sum(_divergence(args, teacher_logits, logits[:, :-1]) for logits in unrolled) / len(unrolled)
    student_logits = student(ids, use_cache=False).logits[:, :-1]
    if args.loss == "hybrid":
        return hybrid_distillation_loss(teacher_logits, student_logits, ids[:, 1:], args.alpha, args.kd_temperature)
    return _divergence(args, teacher_logits, student_logits)


def _divergence(args: DistillArguments, teacher_logits, student_logits):
    loss = divergence(args.loss, teacher_logits, student_logits, args.gen_temperature, beta=args.beta)
    if args.kl_weight:
        loss = loss + args.kl_weight * forward_kl(teacher_logits, student_logits, args.gen_temperature)
    return loss


def run_distillation(data_args, args: DistillArguments, training_args):
    """Train a student of `args.student_depth` from the teacher; writes it with `distill_metrics.json`."""
    from ..training import make_accelerator, train
    from ..training.trainer import check_output_free, check_resumable
    from ..training.teacher import evaluate_loss

    check_output_not_input(training_args.output_dir, teacher_path=args.teacher_path,
                           tokenizer_path=args.tokenizer_path, data_dir=data_args.data_dir)
    check_output_free(training_args)  # a saved model there is replaced only when asked
    accelerator = make_accelerator(training_args)
    teacher = load_pretrained(VQGPTForCausalLM, args.teacher_path, "teacher_path").requires_grad_(False)
    check_sampling_options(teacher, {"temperature": "gen_temperature", "top_k": "gen_top_k"}, **args.generation_kwargs)
    tokenizer = load_pretrained(VQTokenizer, args.tokenizer_path, "tokenizer_path")
    # Before the data is tokenized: a tokenizer of another codebook or grid gives the teacher tokens it never saw.
    check_tokenizer_matches(tokenizer, teacher.config, data_args.resolution, argument="tokenizer_path")
    with accelerator.main_process_first():
        splits = token_splits(data_args, tokenizer, lambda names: check_dataset_matches(teacher.config, names))
    teacher.to(accelerator.device)
    student = make_draft(args, teacher)
    student_layers = student.config.num_hidden_layers
    if student_layers >= teacher.config.num_hidden_layers:  # such a draft costs a teacher step per drafted token
        warnings.warn(f"The student has {student_layers} layers, its teacher {teacher.config.num_hidden_layers}: a "
                      "draft as deep as its teacher cannot make decoding faster (use a smaller student).", stacklevel=2)
    collate = collate_tokens(teacher.config)
    generation = args.generation_kwargs
    val_sequences = collate(list(splits["validation"]))

    inputs = {"weights of teacher_path": weights_fingerprint(teacher),  # the folders may move, their
              "weights of tokenizer_path": weights_fingerprint(tokenizer)}  # models may not (on resume)
    run_config = {"data": vars(data_args), "distill": vars(args), "inputs": inputs}
    # Before the teacher samples anything (minutes): a checkpoint of other settings, a batch larger than the data.
    check_resumable(training_args, run_config,
                    args.num_teacher_samples if args.data_source == "teacher" else len(splits["train"]),
                    accelerator.num_processes)
    val_labels = torch.as_tensor(splits["validation"][:]["label"])
    alpha_labels = val_labels.repeat(args.num_alpha_prefixes // len(val_labels) + 1)[: args.num_alpha_prefixes]
    alpha_sequences = sample_sequences(teacher, class_prompts(teacher, alpha_labels), seed=1234, **generation)
    train_data = splits["train"]
    if args.data_source == "teacher":
        train_labels = torch.as_tensor(train_data[:]["label"])
        labels = train_labels[torch.randint(len(train_labels), (args.num_teacher_samples,), generator=torch.Generator().manual_seed(0))]
        sampled = sample_sequences(teacher, class_prompts(teacher, labels), seed=training_args.seed, **generation).cpu()
        train_data = [{"label": int(label), "codes": seq[1:]} for label, seq in zip(labels, sampled)]
    metrics: dict = {}
    micro = {"step": None, "index": 0}

    def batch_fn(student, ids, step):
        # Sampled before the loss, without gradients and outside autocast / accumulation (TRL's GKD trainer
        # samples in its training step, then computes the loss): the student's own samples after the same
        # (class or null) prompts, with probability lmbda.
        ids = drop_class(ids.to(accelerator.device), teacher.config, teacher.config.class_dropout_prob)
        # The draws of this micro-batch follow from (seed, rank, step, micro-batch) alone, so that a run resumed from
        # a checkpoint draws what the uninterrupted one did (one generator from the start restarted at the seed).
        micro["index"] = micro["index"] + 1 if micro["step"] == step else 0
        micro["step"] = step
        on_policy_rng = random.Random(f"{training_args.seed}/{accelerator.process_index}/{step}/{micro['index']}")
        on_policy = args.lmbda > 0 and on_policy_rng.random() < args.lmbda
        if on_policy:
            ids = sample_sequences(student, ids[:, :1], seed=on_policy_rng.randrange(2**31), **generation)
        return ids, {"on_policy": float(on_policy)}

    def loss_fn(model, ids, step):
        return distillation_loss(args, teacher, model, ids), {}

    def eval_fn(model, step):
        result = expected_acceptance(teacher, model, alpha_sequences, **generation)
        val = evaluate_loss(model, val_sequences)  # a feature draft: with the teacher's features
        metrics.update(alpha=result["alpha"], alpha_by_position=result["alpha_by_position"].tolist(),
                       val_loss=val["loss"], val_perplexity=val["perplexity"])
        logged = {"alpha": result["alpha"], "val_loss": val["loss"]}
        if "alpha_own_features" in result:
            metrics["alpha_own_features"] = logged["alpha_own_features"] = result["alpha_own_features"]
        return logged

    def save_fn(model, output_dir):
        model.save_pretrained(output_dir)
        summary = {"alpha": metrics.get("alpha"), "val_loss": metrics.get("val_loss"),
                   "val_perplexity": metrics.get("val_perplexity"), "alpha_by_position": metrics.get("alpha_by_position"),
                   "parameters": model.num_parameters(), "loss": args.loss, "lmbda": args.lmbda,
                   "data_source": args.data_source, "steps": training_args.max_steps, "generation": generation,
                   "teacher": args.teacher_path}
        if args.feature_draft:
            summary.update(draft_type="feature", alpha_own_features=metrics.get("alpha_own_features"),
                           feature_layers=model.config.feature_layers, ttt_steps=args.ttt_steps)
        with open(os.path.join(output_dir, "distill_metrics.json"), "w") as f:
            json.dump(json_safe(summary), f, indent=2, allow_nan=False)

    return train(student, train_data, loss_fn, training_args, accelerator, collate, eval_fn, save_fn, run_config,
                 batch_fn=batch_fn)
