"""Our sampler through transformers' own door: `model.generate(..., custom_generate=speculative_generate)`.

`generate()` prepares the prompt and the `GenerationConfig` as usual and hands them to this decoding method;
`draft_model`, `gamma`, `adaptive_gamma` and `generator` are its extra keyword arguments:

    from hf_specdec.speculative import speculative_generate
    teacher.generate(prompt, custom_generate=speculative_generate, draft_model=student, gamma=6,
                     do_sample=True, top_k=None)

Batches of any size work (HF's own assisted generation takes batch size 1 only).
"""

import torch
from transformers import (LogitsProcessorList, MaxLengthCriteria, TemperatureLogitsWarper, TopKLogitsWarper,
                          TopPLogitsWarper)

from .decoding import speculative_sample

_SUPPORTED_PROCESSORS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)


def speculative_generate(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria,
    generation_config,
    draft_model=None,
    gamma: int = 4,
    adaptive_gamma: bool = False,
    generator: torch.Generator | None = None,
    **model_kwargs,
) -> torch.LongTensor:
    """A `custom_generate` decoding method running `speculative_sample(model, draft_model, ...)`.

    Sampling settings (`do_sample`, `temperature`, `top_k`, `top_p`, length) come from `generation_config`;
    `cfg_scale` from the model keyword arguments. Returns the sequences, prompt included.
    """
    if draft_model is None:
        raise ValueError("`draft_model` is required: pass `draft_model=student` to generate().")
    if (generation_config.num_beams or 1) > 1:
        raise ValueError(f"speculative_generate samples (or decodes greedily) one sequence per row: `num_beams` must be "
                         f"1, got {generation_config.num_beams} (beam search is not speculative sampling).")
    wanted = [name for name in ("return_dict_in_generate", "output_scores", "output_logits", "output_attentions",
                                "output_hidden_states") if getattr(generation_config, name, False)]
    if wanted:
        raise ValueError(f"speculative_generate returns the sequences only; {', '.join(f'`{n}`' for n in wanted)} "
                         "cannot be honoured: leave them unset, or call `speculative_sample(teacher, draft, prompt)`, "
                         "whose output also holds the acceptance statistics.")
    unsupported = [type(p).__name__ for p in logits_processor if not isinstance(p, _SUPPORTED_PROCESSORS)]
    if unsupported:
        raise ValueError(
            f"speculative_generate applies temperature, top_k and top_p only; remove the settings that add {unsupported}."
        )
    # generate() turns the length into a MaxLengthCriteria, which the sampler honours; anything else (the user's
    # `stopping_criteria`, `max_time`, `stop_strings`) would be dropped without a word.
    other = [type(c).__name__ for c in (stopping_criteria or ()) if not isinstance(c, MaxLengthCriteria)]
    if other:
        raise ValueError(f"speculative_generate stops at the requested length only; it cannot honour {other} (from "
                         "`stopping_criteria`, `max_time` or `stop_strings`): leave them unset, or generate without "
                         "`custom_generate`.")
    mask = model_kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and not bool(mask.bool().all()):
        raise ValueError("speculative_generate decodes unpadded prompts: `attention_mask` must be all ones (or left "
                         "out); image prompts are never padded.")
    do_sample = bool(generation_config.do_sample)
    out = speculative_sample(
        model,
        draft_model,
        input_ids,
        gamma=gamma,
        max_new_tokens=generation_config.max_length - input_ids.shape[1],
        do_sample=do_sample,
        temperature=generation_config.temperature if do_sample and generation_config.temperature else 1.0,
        top_k=(generation_config.top_k or None) if do_sample else None,  # transformers' 0 means "off", as None
        top_p=generation_config.top_p if do_sample and generation_config.top_p is not None and generation_config.top_p < 1.0 else None,
        cfg_scale=model_kwargs.get("cfg_scale"),
        generator=generator,
        adaptive_gamma=adaptive_gamma,
    )
    return out.sequences
