"""Glue between a tokenizer and a VQGPT: compatibility checks and class prompts -> images."""

import torch

from .models import VQGPTForCausalLM


def check_tokenizer_matches(tokenizer, config) -> None:
    """Raise `ValueError` unless `tokenizer`'s codebook and token grid are those of the model `config`."""
    if tokenizer.codebook_size != config.codebook_size:
        raise ValueError(
            f"`tokenizer` has {tokenizer.codebook_size} codes but the model's `codebook_size` is "
            f"{config.codebook_size}: use the tokenizer the model was trained on."
        )
    if tuple(tokenizer.grid_size()) != (config.grid_h, config.grid_w):
        raise ValueError(
            f"`tokenizer` makes a {tokenizer.grid_size()} token grid but the model expects "
            f"({config.grid_h}, {config.grid_w})."
        )


@torch.no_grad()
def generate_images(
    model: VQGPTForCausalLM, tokenizer, labels=None, num_images: int | None = None, **generate_kwargs
) -> tuple[torch.Tensor, torch.LongTensor]:
    """Sample images for class ids `labels` (or `num_images` unconditional ones) with `model.generate`.

    `generate_kwargs` go to `generate` (`do_sample`, `top_k`, `cfg_scale`, `assistant_model`, ...).
    Returns `(images (B, 3, H, W) in [-1, 1], codes (B, h, w))`.
    """
    check_tokenizer_matches(tokenizer, model.config)
    prompt = model.class_prompt(labels, batch_size=num_images)
    sequences = model.generate(prompt, **generate_kwargs)  # the default max_length is the whole grid
    codes = sequences[:, 1:].reshape(-1, model.config.grid_h, model.config.grid_w)
    device = next(iter(tokenizer.parameters()), torch.empty(0)).device
    return tokenizer.decode_from_indices(codes.to(device)), codes
