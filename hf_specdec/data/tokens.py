"""Token data: the precompute (the seed's `precompute_tokens.py`: images -> `(label, codes)` with a cached
`Dataset.map`), model inputs from it (`token_sequences`, `collate_tokens`) and class dropout (`drop_class`).

The map's fingerprint is derived from the source split's fingerprint, the tokenizer's weights and config, and the
resolution, so a second run with the same inputs reloads the cached Arrow file instead of re-encoding, and any
change of the tokenizer's weights produces a new cache.
"""

import hashlib
import json
import os

import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import save as safetensors_bytes

from ..images import images_to_tensor
from .config import DataArguments


def tokenizer_fingerprint(tokenizer) -> str:
    """A stable hash of a tokenizer's config and weights."""
    digest = hashlib.sha256(json.dumps(dict(tokenizer.config), sort_keys=True, default=str).encode())
    state = {k: v.detach().cpu().contiguous() for k, v in tokenizer.state_dict().items()}
    digest.update(safetensors_bytes(state))
    return digest.hexdigest()[:16]


def precompute_tokens(
    dataset: Dataset | DatasetDict,
    tokenizer,
    resolution: int,
    batch_size: int = 64,
    cache_dir: str | None = None,
    num_proc: int | None = None,
) -> Dataset | DatasetDict:
    """Encode every image to codes; returns datasets with columns `label` (int) and `codes` (`(h*w,)` int64),
    in torch format.

    Args:
        dataset: a split or `DatasetDict` with `image` and `label` columns.
        tokenizer: `VQTokenizer` or `PaletteTokenizer` (anything with `encode_to_indices` and a config).
        resolution: images are resized to `resolution x resolution` before encoding.
        cache_dir: where the Arrow cache files go (default: next to the source dataset's cache, or a temp dir
            chosen by `datasets` for in-memory data, which is not reused across runs).
    """
    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {name: precompute_tokens(split, tokenizer, resolution, batch_size, cache_dir, num_proc) for name, split in dataset.items()}
        )
    for column in ("image", "label"):
        if column not in dataset.column_names:
            raise ValueError(f"`dataset` needs an {column!r} column, has {dataset.column_names}.")
    fingerprint = hashlib.sha256(
        f"{dataset._fingerprint}-{tokenizer_fingerprint(tokenizer)}-{resolution}".encode()
    ).hexdigest()[:16]
    device = next(iter(tokenizer.parameters()), torch.empty(0)).device
    was_training = tokenizer.training
    tokenizer.eval()

    def encode(batch):
        images = images_to_tensor(batch["image"], resolution).to(device)
        codes = tokenizer.encode_to_indices(images).flatten(1).cpu()
        return {"label": batch["label"], "codes": codes.tolist()}

    cache_file_name = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        cache_file_name = os.path.join(cache_dir, f"tokens-{fingerprint}.arrow")
    tokens = dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        remove_columns=[c for c in dataset.column_names if c not in ("label",)],
        new_fingerprint=fingerprint,
        cache_file_name=cache_file_name,
        num_proc=num_proc,
        desc="Encoding images to tokens",
    )
    tokenizer.train(was_training)
    return tokens.with_format("torch")


def token_sequences(labels: torch.Tensor, codes: torch.Tensor, codebook_size: int, num_classes: int) -> torch.Tensor:
    """Model input `(B, 1 + h*w)`: the class token (or the null token when `num_classes == 0`) then the codes."""
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(
            f"`codes` hold values up to {int(codes.max())}, outside the model's codebook of {codebook_size}: "
            "the tokenizer's codebook size must equal the model's `codebook_size`."
        )
    if num_classes == 0:
        first = torch.full_like(labels, codebook_size)
    else:
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"`labels` must be in [0, {num_classes}).")
        first = codebook_size + labels
    return torch.cat([first.long().unsqueeze(1), codes.long()], dim=1)


def token_splits(data_args: DataArguments, tokenizer, check_classes=None) -> DatasetDict:
    """Precomputed `(label, codes)` splits of the data `data_args` configures (cached by fingerprint), checked before
    any image is loaded: the images' `resolution` must be the one the tokenizer was trained at, so that the token
    grid is the one every model trained on these tokens (and every later use of them) expects. `check_classes`
    (called with the class names) runs on the loaded splits before any image is encoded (a model of other classes
    failed only after the whole dataset was tokenized)."""
    side = getattr(tokenizer.config, "sample_size", None)  # a `PaletteTokenizer` pools images of any size
    if side is not None and data_args.resolution != side:
        h, w = tokenizer.grid_size()
        raise ValueError(f"`resolution` {data_args.resolution} is not the {side}x{side} the tokenizer was trained at "
                         f"({h}x{w} tokens per image): pass `--resolution {side}`, or train a tokenizer at "
                         f"{data_args.resolution}.")
    splits = data_args.load()
    if check_classes is not None:
        check_classes(splits["train"].features["label"].names)
    return precompute_tokens(splits, tokenizer, data_args.resolution, cache_dir=data_args.token_cache_dir)


def collate_tokens(config):
    """A `collate_fn` for the model `config`: `(label, codes)` rows -> `(B, 1 + h*w)` model inputs."""

    def collate(rows):
        labels = torch.stack([torch.as_tensor(r["label"]) for r in rows])
        codes = torch.stack([torch.as_tensor(r["codes"]) for r in rows])
        return token_sequences(labels, codes, config.codebook_size, config.num_classes)

    return collate


def drop_class(ids: torch.Tensor, config, prob: float) -> torch.Tensor:
    """Replace the class token of `ids` `(B, 1 + h*w)` by the null token with probability `prob` per row (the class
    dropout of classifier-free guidance); a no-op for an unconditional model."""
    if prob <= 0 or config.num_classes == 0:
        return ids
    ids = ids.clone()
    drop = torch.rand(ids.shape[0], device=ids.device) < prob
    ids[drop, 0] = config.null_token_id
    return ids
