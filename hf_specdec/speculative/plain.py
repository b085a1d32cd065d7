"""The project's own plain (one token per forward) decoding loop: the fair baseline for speculative decoding.

Same preallocated cache, logits processing and sampling as `speculative_sample`, so that a speedup measured
against it is the algorithm's, not a difference in loop overhead.
"""

import torch

from .cache import RaggedCache
from .sampling import sample_categorical, warp_logits


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
    num_layers = model.num_layers
    total = P + new_tokens
    cache = RaggedCache(num_layers, total)
    device = input_ids.device
    # Every row is at the same slot, so the masks and positions of all steps are views of two tensors built once.
    causal = torch.ones(total, total, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, L, L)
    slots = torch.arange(total, device=device).expand(B, -1)
    sequences = torch.empty(B, total, dtype=torch.long, device=device)
    sequences[:, :P] = input_ids
    tokens, position = input_ids, 0
    for t in range(P, total):
        logits = model(tokens, cache=cache, attention_mask=causal[:, :, position:t], position_ids=slots[:, position:t],
                       cfg_scale=cfg_scale, use_cache=True).logits[:, -1]
        logits = warp_logits(logits, temperature if do_sample else 1.0, top_k, top_p)
        if do_sample:
            token = sample_categorical(logits.softmax(-1), generator)[:, None]
        else:
            token = logits.argmax(-1, keepdim=True)
        sequences[:, t : t + 1] = token
        tokens, position = token, t
    return sequences
