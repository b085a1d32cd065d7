"""How `VQGPTForCausalLM.generate()` reads its arguments (remote code beside modeling_vqgpt.py).

transformers' `generate()` accepts many settings an image model must not take as they are: an end token, guidance
that reruns the model on its last token, beam search that drops the assistant, an unset top-k that transformers fills
with 50, warpers applied twice in assisted generation. `check_generate_kwargs` refuses what it would misread, naming
the argument; `generate_settings` fills what this model means by default. Like modeling_vqgpt.py, this file imports
nothing from `hf_specdec` except the config, so it loads with `trust_remote_code=True`.
"""

import copy

import torch
from transformers import PreTrainedModel
from transformers.generation.logits_process import LogitsProcessorList, TemperatureLogitsWarper

from .configuration_vqgpt import _is_finite_number, _is_int


MAX_CFG_SCALE = 1e4  # guidance scales are ~1-10; past this `s * (c - u)` overflows float32 logits into NaN


def check_cfg_scale(cfg_scale) -> None:
    """`cfg_scale` is None or a real number of magnitude at most `MAX_CFG_SCALE` (NaN, inf or 1e300 gave NaN logits and
    all-code-0 images, a string a deep TypeError)."""
    if cfg_scale is not None and (
        not _is_finite_number(cfg_scale) or abs(cfg_scale) > MAX_CFG_SCALE
    ):
        raise ValueError(f"`cfg_scale` must be a finite number in [-{MAX_CFG_SCALE:g}, {MAX_CFG_SCALE:g}] (or None: no "
                         f"guidance), got {cfg_scale!r}.")


def check_draft_matches(teacher, draft, argument: str = "draft") -> None:
    """Raise `ValueError` naming `argument` unless `draft` shares the teacher's codebook, classes and grid."""
    t, d = teacher.config, draft.config
    for name in ("codebook_size", "num_classes", "grid_h", "grid_w"):
        if getattr(t, name) != getattr(d, name):
            raise ValueError(
                f"`{argument}` does not match the teacher: {name} is {getattr(d, name)} in the draft and "
                f"{getattr(t, name)} in the teacher."
            )


# The generation settings from which transformers builds each sampling warper.
_WARPER_SETTINGS = {"TemperatureLogitsWarper": "temperature", "TopKLogitsWarper": "top_k", "TopPLogitsWarper": "top_p",
                    "MinPLogitsWarper": "min_p", "TypicalLogitsWarper": "typical_p", "EpsilonLogitsWarper": "epsilon_cutoff",
                    "EtaLogitsWarper": "eta_cutoff", "TopHLogitsWarper": "top_h"}


def _warpers_given(logits_processor) -> dict:
    """Settings to switch off because `logits_processor` already holds their warper. transformers (5.x) merges a
    given processor list with the one it builds *before* it adds the sampling warpers, so a warper of both lists ran
    twice, which is what assisted generation does to its assistant on every draft token: the assistant is handed the
    teacher's processors (temperature included) next to the same settings, and drafted at temperature T**2
    (T = 1e-19 overflowed to inf and crashed) with top-p applied twice. Switched off here, the given warper is the
    only one, as transformers documents for processors found in both lists."""
    settings = {}
    for processor in logits_processor or ():
        for cls in type(processor).__mro__:  # (a subclass, like `_ShiftedTemperature`, counts as its warper)
            if cls.__name__ in _WARPER_SETTINGS and cls.__module__.startswith("transformers."):
                settings[_WARPER_SETTINGS[cls.__name__]] = None
    return settings


class _ShiftedTemperature(TemperatureLogitsWarper):
    """transformers' temperature warper with the row's largest logit subtracted first (the same distribution): below
    a temperature of about 1e-37 the float32 logits divided by it overflowed to inf and sampling failed with NaN
    probabilities, where the project's samplers (`warp_logits`) accept any temperature down to the least normal float."""

    def __call__(self, input_ids, scores):
        return super().__call__(input_ids, scores - scores.amax(-1, keepdim=True))


def check_generate_kwargs(model, generation_config, kwargs) -> None:
    """What `generate` would otherwise misread: transformers' `guidance_scale` without the unconditional prompt
    (its unbatched processor reruns this model on the last token alone, so the guidance cancels out), an unusable `cfg_scale`, guidance with
    beam search, an assistant that is not a matching VQGPT model, an end-of-sequence token (it silently filled the rest of an
    image with that code), and transformers' prompt-lookup and early-exit drafting (both failed deep inside with
    an IndexError)."""
    guidance_scale = kwargs.get("guidance_scale", getattr(generation_config, "guidance_scale", None))
    if guidance_scale not in (None, 1, 1.0) and kwargs.get("negative_prompt_ids") is None:
        raise ValueError("`guidance_scale` without `negative_prompt_ids`: transformers' guidance would rerun this "
                         "model on the last token alone and cancel out. Pass `cfg_scale=s` (guidance inside the "
                         "model's forward), or `negative_prompt_ids=model.class_prompt(None, batch_size=B)`.")
    if kwargs.get("custom_generate") is not None:
        # transformers hands a callable `custom_generate` only the keyword arguments its signature adds: these
        # would be dropped without a word (the stream never ends, the assistant never drafts).
        dropped = [name for name in ("streamer", "assistant_model") if kwargs.get(name) is not None]
        if dropped:
            raise ValueError(f"{', '.join(f'`{n}`' for n in dropped)} cannot be combined with `custom_generate`: "
                             "transformers does not pass it on. With `custom_generate=speculative_generate` the "
                             "draft is `draft_model=`; for streaming decode without `custom_generate`.")
    cfg_scale = kwargs.get("cfg_scale")
    check_cfg_scale(cfg_scale)
    num_beams = kwargs.get("num_beams", getattr(generation_config, "num_beams", None)) or 1
    if cfg_scale is not None and cfg_scale != 1.0 and num_beams > 1:
        raise ValueError(f"`cfg_scale` cannot be combined with beam search (`num_beams`={num_beams}): guidance "
                         "doubles the rows, beam search reorders them. Use num_beams=1.")
    do_sample = kwargs.get("do_sample", getattr(generation_config, "do_sample", None))
    if do_sample is not None and not isinstance(do_sample, bool):  # any truthy value sampled, "no" too
        raise ValueError(f"`do_sample` must be True or False, got {do_sample!r}.")
    for name in ("max_length", "min_length", "min_new_tokens", "max_new_tokens"):
        value = kwargs.get(name, getattr(generation_config, name, None))
        if value is not None and (not _is_int(value) or value < 0):
            raise ValueError(f"`{name}` must be an integer >= 0 (or unset), got {value!r}.")
    for name in ("top_p", "typical_p"):  # transformers builds their warpers only below 1: 2.0 sampled untruncated
        value = kwargs.get(name, getattr(generation_config, name, None))
        if value is not None and not (_is_finite_number(value) and 0 < value <= 1):
            raise ValueError(f"`{name}` must be a number in (0, 1] (1: off), got {value!r}.")
    value = kwargs.get("num_return_sequences", getattr(generation_config, "num_return_sequences", None))
    if value is not None and (not _is_int(value) or value < 1):  # 0 and -1 gave one image per prompt
        raise ValueError(f"`num_return_sequences` must be an integer >= 1 (images per prompt), got {value!r}.")
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        if kwargs.get(name, getattr(generation_config, name, None)) is not None:
            raise ValueError(f"`{name}`: an image has no begin or end token; it would overwrite the first or last "
                             "code of every image with that code. Leave it unset.")
    eos = kwargs.get("eos_token_id", getattr(generation_config, "eos_token_id", None))
    if eos is not None and eos != []:
        raise ValueError(f"`eos_token_id` {eos!r}: an image has no end token, every sequence is the whole "
                         f"{model.config.grid_h}x{model.config.grid_w} grid. With it, `generate()` stops a row at that "
                         "code and fills the rest of the image with it; leave `eos_token_id` unset.")
    if kwargs.get("prompt_lookup_num_tokens", getattr(generation_config, "prompt_lookup_num_tokens", None)):
        raise ValueError("`prompt_lookup_num_tokens`: transformers' prompt lookup drafts past the end of the "
                         f"{model.config.grid_h}x{model.config.grid_w} token grid (it caps drafts by the tokens seen, not "
                         "by the length left), which this model's positions cannot hold. Draft with a small model "
                         "instead: `assistant_model=draft`, or hf_specdec's `speculative_sample(teacher, draft, prompt)`.")
    if kwargs.get("assistant_early_exit", getattr(generation_config, "assistant_early_exit", None)):
        raise ValueError("`assistant_early_exit`: transformers' early-exit drafting needs a model that can stop after "
                         "n layers and reuse them, which this one does not expose to `generate()`. Use hf_specdec's "
                         "`speculative_sample(teacher, EarlyExitDraft(teacher, n), prompt)` (model-speculative).")
    assistant = kwargs.get("assistant_model")
    if assistant is None:
        return
    if num_beams > 1:  # transformers then runs beam search and never calls the assistant
        raise ValueError(f"`assistant_model` cannot be combined with beam search (`num_beams`={num_beams}): "
                         "transformers would run beam search without the assistant. Use num_beams=1.")
    if getattr(assistant, "reads_features", False):
        raise ValueError("`assistant_model` is a feature-conditioned draft: assisted generation passes an assistant "
                         "token ids only, never this model's hidden states. Use hf_specdec's "
                         "`speculative_sample(teacher, draft, prompt)` for it.")
    # by model type, not class: with remote code each repo's VQGPTForCausalLM is a class of its own
    if not isinstance(assistant, PreTrainedModel) or getattr(assistant.config, "model_type", None) != model.config.model_type:
        hint = {"EarlyExitDraft": ": a model-speculative draft runs in hf_specdec's `speculative_sample(teacher, "
                                  "EarlyExitDraft(teacher, n), prompt)`",
                "str": ": load it first with `VQGPTForCausalLM.from_pretrained(path_or_hub_id)`"}.get(
                    type(assistant).__name__, "")
        raise ValueError(f"`assistant_model` must be a VQGPTForCausalLM, got {type(assistant).__name__}{hint}.")
    check_draft_matches(model, assistant, argument="assistant_model")


def generate_settings(model, input_ids, generation_config, kwargs, max_new_tokens=None):
    """The `(generation_config, kwargs)` that `GenerationMixin.generate` gets: what this model sets where the caller
    left it open (the whole grid as the length, the whole codebook as top-k, an all-ones attention mask), warpers the
    caller's `logits_processor` already holds switched off, and lengths past the grid refused. The caller's
    `generation_config` is changed on a copy only. `max_new_tokens`: the caller's, from `kwargs` or its config."""
    config = generation_config if generation_config is not None else model.generation_config
    fill = {}  # settings this model sets where the caller left them open
    if kwargs.get("do_sample", config.do_sample) and "top_k" not in kwargs and config.top_k is None:
        # transformers 5 fills an unset top_k with 50: a codebook of more than 50 codes was sampled truncated,
        # not from the model's distribution (the project's samplers and `top_k=None` elsewhere mean "off").
        fill["top_k"] = 0
    given = _warpers_given(kwargs.get("logits_processor"))
    temperature = kwargs.get("temperature", getattr(config, "temperature", None))
    if (kwargs.get("do_sample", config.do_sample) and isinstance(temperature, float) and 0 < temperature < 1e-3
            and "temperature" not in given):
        kwargs["logits_processor"] = LogitsProcessorList([_ShiftedTemperature(temperature),
                                                          *(kwargs.get("logits_processor") or ())])
        given["temperature"] = None
    fill.update(given)
    # Every prompt token is real; an explicit mask keeps `generate()` from inferring padding from token ids
    # (checkpoints saved before pad_token_id was unset name the null token as pad).
    mask = kwargs.get("attention_mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != input_ids.shape):
        raise ValueError(f"`attention_mask` must be a tensor of the prompt's shape {tuple(input_ids.shape)}, got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__} (image "
                         "prompts are never padded: leave `attention_mask` out).")
    if isinstance(mask, torch.Tensor) and not mask.bool().any(-1).all():
        raise ValueError("`attention_mask` has a row of zeros: that prompt would be all padding, with no token to "
                         "start from (image prompts are never padded: leave `attention_mask` out).")
    kwargs.setdefault("attention_mask", torch.ones_like(input_ids))
    grid = model.config.max_position_embeddings
    for name, room in (("min_new_tokens", grid - input_ids.shape[1]), ("min_length", grid)):
        value = kwargs.get(name, getattr(generation_config, name, None))  # a floor past the grid cannot be met:
        if value is not None and value > room:  # it was silently dropped
            raise ValueError(f"`{name}`={value} does not fit the {model.config.grid_h}x{model.config.grid_w} token "
                             f"grid: at most {room} here.")
    max_length = kwargs.get("max_length", getattr(generation_config, "max_length", None))
    if max_new_tokens is None and max_length is not None and max_length > model.config.max_position_embeddings:
        raise ValueError(f"`max_length`={max_length} does not fit the {model.config.grid_h}x{model.config.grid_w} "
                         f"token grid: a sequence holds at most {model.config.max_position_embeddings} tokens "
                         "(prompt token + grid).")
    if max_new_tokens is None and max_length is None:
        # Default: the rest of the token grid. Set here rather than as `generation_config.max_length`, which
        # would clash with the `max_new_tokens` that assisted generation passes to its assistant.
        fill["max_new_tokens"] = model.config.max_position_embeddings - input_ids.shape[1]
    if generation_config is not None and fill:  # on a copy of the caller's config: transformers deprecates a
        generation_config = copy.deepcopy(generation_config)  # config passed together with generation kwargs
        generation_config.update(**fill)
    else:
        kwargs.update(fill)
    return generation_config, kwargs
