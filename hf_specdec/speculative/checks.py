"""The argument checks of every sampling entry point (`plain_sample`, `speculative_sample`, `SpeculativeDecoder`,
`speculative_generate`): `ValueError`s that name the argument and what is allowed, raised before any buffer is
sized. Sampling settings are checked by `SamplingConfig` itself."""

import difflib
import inspect
import warnings

import torch

from ..models.generation_vqgpt import check_draft_matches
from ..models.modeling_vqgpt import VQGPTForCausalLM, check_weights_loaded, describe_ids
from .sampling import SamplingConfig, _is_int, _is_number

MODES = ("auto", "eager", "compile", "cuda-graph")


def check_model(model, argument: str) -> None:
    """Raise `ValueError` naming `argument` unless `model` is a loaded VQGPT model (or a draft built on one): a
    path or Hub id is not loaded for the caller."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or not all(
        hasattr(config, name) for name in ("codebook_size", "num_classes", "grid_h", "grid_w")
    ):
        hint = " (load it first: `VQGPTForCausalLM.from_pretrained(path_or_hub_id)`)" if isinstance(model, str) else ""
        raise ValueError(f"`{argument}` must be a VQGPT model, got {type(model).__name__}{hint}.")
    check_weights_loaded(model, argument)


def check_generator_model(model, argument: str) -> None:
    """A model that samples the output (the teacher): loaded, able to run alone, and in eval mode where dropout would
    otherwise make every pass a different model (the output would follow no fixed distribution, and speculative
    sampling's verify passes would not be the teacher's)."""
    check_model(model, argument)
    if getattr(model, "reads_features", False):
        raise ValueError(f"`{argument}` is a feature-conditioned draft: it reads its teacher's hidden states and cannot "
                         f"generate alone; pass the teacher as `{argument}` and this model as the draft.")
    runs = model._modules.get("teacher", model) if isinstance(model, torch.nn.Module) else model  # an early-exit
    if runs.training and getattr(model.config, "dropout", 0.0) > 0:  # draft runs its teacher's layers, in its mode
        raise ValueError(f"`{argument}` is in training mode with dropout {model.config.dropout}: its samples would not "
                         f"follow the model's distribution; call `{argument}.eval()` first.")


def warn_if_training(draft, argument: str) -> None:
    """Warn when a draft runs with dropout (in training mode, as a distillation leaves it): the output stays exactly
    the teacher's, but its drafts are noisier and fewer of them are accepted (alpha 0.81 against 0.86)."""
    dropout = getattr(getattr(draft, "config", None), "dropout", 0.0) or 0.0
    if getattr(draft, "training", False) and dropout > 0:
        warnings.warn(f"`{argument}` is in training mode with dropout {dropout}: the output is still the teacher's, but "
                      f"fewer drafts are accepted; call `{argument}.eval()` first.", stacklevel=4)


def check_inputs(model, input_ids, max_new_tokens=None, generator=None, argument: str = "teacher") -> int:
    """Check a call's model (named `argument`), prompt, length and generator; return the number of new tokens
    (default: the rest of the grid)."""
    check_generator_model(model, argument)
    config = model.config
    # The type, shape and device first: `check_prompt` reads the tokens' values, which a tensor on another device
    # (e.g. meta) cannot give.
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32):
        raise ValueError("`input_ids` must be a torch.long (or int32) tensor of shape (batch, length >= 1), e.g. "
                         f"`teacher.class_prompt(labels)`; got {describe_ids(input_ids)}.")
    if input_ids.dim() != 2 or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
        raise ValueError(f"`input_ids` must have shape (batch, length >= 1), got {tuple(input_ids.shape)}.")
    if max_new_tokens is not None and (not _is_int(max_new_tokens) or max_new_tokens < 1):
        raise ValueError(f"`max_new_tokens` must be an integer >= 1, got {max_new_tokens!r}.")
    device = next(model.parameters()).device
    if input_ids.device != device:
        raise ValueError(f"`input_ids` is on {input_ids.device} but the model on {device}: pass "
                         f"`input_ids.to({str(device)!r})` (the prompts of `model.class_prompt` are on its device).")
    model.check_prompt(input_ids, max_new_tokens)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
        if generator.device.type != device.type:
            raise ValueError(f"`generator` is on {generator.device} but the model on {device}: "
                             f"use torch.Generator(device={device.type!r}).")
    new_tokens = max_new_tokens if max_new_tokens is not None else config.max_position_embeddings - input_ids.shape[1]
    if new_tokens < 1:
        raise ValueError("`input_ids` already fills the token grid: there is nothing left to generate.")
    return new_tokens


def check_guidance(model, input_ids, cfg_scale) -> None:
    """`VQGPTForCausalLM.check_guidance` for any model with a VQGPT config (an `EarlyExitDraft` too): guidance for
    prompts that are all the null token would change nothing, at twice the cost."""
    VQGPTForCausalLM.check_guidance(model, input_ids, cfg_scale)


def check_sampling_arguments(
    model,
    input_ids,
    max_new_tokens=None,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Raise `ValueError` naming the argument unless the sampling settings and the call make sense for `model`;
    returns the number of new tokens. For callers that hold loose settings (scripts, `custom_generate`)."""
    sampling = SamplingConfig(do_sample, temperature, top_k, top_p, cfg_scale)
    if sampling.guided and model.config.num_classes == 0:
        raise ValueError("`cfg_scale` needs a class-conditional model (num_classes > 0).")
    return check_inputs(model, input_ids, max_new_tokens, generator)


def check_adaptive_gamma(adaptive_gamma, cost_ratio) -> None:
    """`adaptive_gamma` is a bool; `cost_ratio` (read by adaptive gamma only) a finite number >= 0 or None."""
    if not isinstance(adaptive_gamma, bool):
        raise ValueError(f"`adaptive_gamma` must be True or False, got {adaptive_gamma!r}.")
    if cost_ratio is not None and not (_is_number(cost_ratio) and cost_ratio >= 0):
        raise ValueError(f"`cost_ratio` must be a finite number >= 0 or None, got {cost_ratio!r}.")
    if cost_ratio is not None and not adaptive_gamma:
        raise ValueError("`cost_ratio` is read by adaptive gamma only: pass `adaptive_gamma=True` with it.")


def check_freeze_weights(freeze_weights, mode: str) -> None:
    """`freeze_weights` is a bool and only set with `mode="compile"` (the weights go into the compiled rounds)."""
    if not isinstance(freeze_weights, bool):
        raise ValueError(f"`freeze_weights` must be True or False, got {freeze_weights!r}.")
    if freeze_weights and mode != "compile":
        raise ValueError(f"`freeze_weights` compiles the weights into the rounds: it needs mode='compile', got {mode!r}.")


def placement(model) -> tuple | None:
    """`(device, dtype)` of a model's first parameter (None without a model)."""
    if model is None:
        return None
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def checked_placement(model, argument: str) -> tuple:
    """`placement(model)`, after a `ValueError` naming `argument` if its floating-point parameters are split over
    several devices or dtypes (a half-moved model fails deep inside a matmul otherwise)."""
    placements = {(p.device, p.dtype) for p in model.parameters() if p.is_floating_point()}
    if len(placements) > 1:
        found = ", ".join(sorted(f"{d} {t}" for d, t in placements))
        raise ValueError(f"`{argument}` has parameters on several devices or dtypes ({found}): move the whole model "
                         f"with `{argument}.to(device, dtype)`.")
    return placement(model)


def check_compile_options(compile_options) -> None:
    """`compile_options` is None or a dict of `torch.compile`'s keyword arguments and the decoder's own
    (`freeze_weights`, `skip_guards`): a misspelt key was ignored in eager mode and failed at the first compiled call."""
    if compile_options is None:
        return
    if not isinstance(compile_options, dict):
        raise ValueError(f"`compile_options` must be a dict of keyword arguments, got {type(compile_options).__name__}.")
    allowed = ["fullgraph", "dynamic", "backend", "mode", "options", "disable"]  # torch.compile's, and any newer ones
    allowed += [name for name in inspect.signature(torch.compile).parameters
                if name not in allowed and name not in ("model", "fn", "args", "kwargs")]
    allowed += ["freeze_weights", "skip_guards"]
    unknown = [key for key in compile_options if key not in allowed]
    if unknown:
        hint = "".join(f" (did you mean {close[0]!r}?)" for key in unknown[:1]
                       for close in [difflib.get_close_matches(str(key), allowed, n=1)] if close)
        raise ValueError(f"`compile_options` has unknown key(s) {unknown}{hint}; allowed: {', '.join(allowed)}.")


def check_round_arguments(gamma=0, most=0, repeats=1) -> None:
    """A built decoder's own calls: a round's `gamma` fits the buffers sized for `most` (a larger one indexed past
    them), calibration times `repeats` >= 1 rounds per draft length (0 indexed an empty list)."""
    if not _is_int(gamma) or not 0 <= gamma <= most:
        raise ValueError(f"`gamma` of a round must be an integer in [0, {most}] (this decoder's buffers hold gamma "
                         f"{most}), got {gamma!r}.")
    if not _is_int(repeats) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer >= 1 (timed rounds per draft length), got {repeats!r}.")


def check_decoder_arguments(teacher, draft, gamma, batch_size, sampling, mode, relaxed_neighbours=None,
                            freeze_weights=False) -> None:
    """What a `SpeculativeDecoder` needs before it allocates anything."""
    check_generator_model(teacher, "teacher")
    if not isinstance(sampling, SamplingConfig):
        raise ValueError(f"`sampling` must be a SamplingConfig, got {type(sampling).__name__}.")
    if sampling.guided and teacher.config.num_classes == 0:
        raise ValueError("`cfg_scale` needs a class-conditional model (num_classes > 0).")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {', '.join(MODES)}, got {mode!r}.")
    check_freeze_weights(freeze_weights, mode)
    device, dtype = checked_placement(teacher, "teacher")
    if mode == "cuda-graph" and device.type != "cuda":
        raise ValueError("`mode='cuda-graph'` needs the models on a CUDA device; use 'eager' or 'compile' on the CPU.")
    if draft is None:
        return
    check_model(draft, "draft")
    check_draft_matches(teacher, draft)
    draft_device, draft_dtype = checked_placement(draft, "draft")
    for what, t, d in (("dtype", dtype, draft_dtype), ("device", device, draft_device)):
        if t != d:
            raise ValueError(f"`draft` has {what} {d} but the teacher {t}: both models must have the same {what} "
                             f"(e.g. `draft.to(teacher.device, teacher.dtype)`).")
    if getattr(draft, "reads_features", False) and draft.teacher is not teacher:
        raise ValueError("`draft` is a feature draft of another teacher: it must read the features of the teacher it "
                         "drafts for (`draft.attach_teacher(teacher)`).")
    grid = teacher.config.num_image_tokens
    if not _is_int(gamma) or not 1 <= gamma <= grid:
        raise ValueError(f"`gamma` must be an integer in [1, {grid}] (the {grid}-token grid), got {gamma!r}.")
    if sampling.tree_depth > gamma:
        raise ValueError(f"`tree_depth` {sampling.tree_depth} must be <= `gamma` {gamma}: the tree branches at draft "
                         f"positions and a round drafts {gamma}, so the chains past `num_drafts ** gamma` would be "
                         f"copies drawn at {sampling.num_drafts ** (sampling.tree_depth - gamma)}x the work.")
    K = teacher.config.codebook_size
    if relaxed_neighbours is not None:
        if not isinstance(relaxed_neighbours, torch.Tensor) or relaxed_neighbours.dim() != 2 or (
            relaxed_neighbours.shape[0] != K
        ):
            raise ValueError(f"`relaxed_neighbours` must be a ({K}, k) table from `latent_neighbours`.")
        if relaxed_neighbours.dtype not in (torch.long, torch.int32) or relaxed_neighbours.shape[1] < 1 or (
            relaxed_neighbours.min() < 0 or relaxed_neighbours.max() >= K
        ):
            raise ValueError(f"`relaxed_neighbours` must hold code indices in [0, {K}) (an integer ({K}, k >= 1) table "
                             f"from `latent_neighbours`), got {relaxed_neighbours.dtype} of shape "
                             f"{tuple(relaxed_neighbours.shape)}.")
        if sampling.verification == "block":
            raise ValueError("`relaxed_neighbours` (lossy) and `verification='block'` cannot be combined.")
        if sampling.num_drafts > 1:
            raise ValueError("`relaxed_neighbours` (lossy) and `num_drafts` > 1 cannot be combined.")
