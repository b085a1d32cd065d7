"""The project's own plain (one token per forward) decoding loop: the fair baseline for speculative decoding.

Same preallocated cache, logits processing and sampling as `speculative_sample`, so that a speedup measured
against it is the algorithm's, not a difference in loop overhead.
"""

import torch

from .cache import RaggedCache
from .sampling import warp_logits


@torch.inference_mode()
def plain_sample(
    model,
    input_ids: torch.LongTensor,
    max_new_tokens: int | None = None,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Autoregressive sampling of `model` (a VQGPT or `EarlyExitDraft`) after `input_ids` `(B, P)`.

    Distributed exactly as `model.generate(input_ids, do_sample=..., temperature=..., top_k=..., top_p=...,
    cfg_scale=...)`. Returns `(B, P + max_new_tokens)`.
    """
    config = model.config
    B, P = input_ids.shape
    new_tokens = max_new_tokens if max_new_tokens is not None else config.max_position_embeddings - P
    model.check_prompt(input_ids, new_tokens)
    num_layers = getattr(model, "num_layers", None) or config.num_hidden_layers
    cache = RaggedCache(num_layers, P + new_tokens)
    sequences = torch.empty(B, P + new_tokens, dtype=torch.long, device=input_ids.device)
    sequences[:, :P] = input_ids
    tokens, position = input_ids, 0
    for t in range(P, P + new_tokens):
        positions = torch.arange(position, t, device=input_ids.device).expand(B, -1)
        logits = model(tokens, cache=cache, position_ids=positions, cfg_scale=cfg_scale, use_cache=True).logits[:, -1]
        logits = warp_logits(logits, temperature if do_sample else 1.0, top_k, top_p)
        if do_sample:
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator)
        else:
            token = logits.argmax(-1, keepdim=True)
        sequences[:, t : t + 1] = token
        tokens, position = token, t
    return sequences
