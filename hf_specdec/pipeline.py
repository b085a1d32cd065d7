"""Glue between a tokenizer and a VQGPT: compatibility checks, class prompts for a batch, token sequences ->
images, `sample_images` (prompts -> `generate` -> images), and the sampling options of a script checked up front."""

import hashlib

import torch

from .models import VQGPTForCausalLM
from .speculative.sampling import _is_int
from .speculative import check_sampling_arguments


_FINGERPRINTS: dict = {}


def weights_fingerprint(module: torch.nn.Module) -> str | None:
    """A hash of `module`'s weights as float32 (not of its config or folder, so it survives a move or a Hub round
    trip): the tokenizer a teacher learned, the teacher and tokenizer a run started from. None for a module held in
    another dtype (its rounded weights would hash differently). Cached until a weight changes."""
    state = module.state_dict()
    if any(v.is_floating_point() and v.dtype != torch.float32 for v in state.values()):
        return None
    key = (id(module), tuple((k, v.data_ptr(), v._version) for k, v in state.items()))
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for name in sorted(state):
            digest.update(name.encode())
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
        _FINGERPRINTS.clear()  # one entry: the usual call checks the same tokenizer again and again
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


tokenizer_weights_fingerprint = weights_fingerprint  # its first name, from when only tokenizers were fingerprinted


def check_tokenizer_matches(tokenizer, config, image_size: int | None = None, argument: str = "tokenizer") -> None:
    """Raise `ValueError` naming `argument` unless `tokenizer`'s codebook, and its token grid for images of
    `image_size` (default: its own `sample_size`), are those of the model `config`, and unless its weights are those
    of the tokenizer the model learned (`config.tokenizer_fingerprint`, where recorded): another tokenizer with the
    same codebook size and grid decodes the same codes to other pictures, without a word."""
    if tokenizer.codebook_size != config.codebook_size:
        raise ValueError(
            f"`{argument}` has {tokenizer.codebook_size} codes but the model's `codebook_size` is "
            f"{config.codebook_size}: use the tokenizer the model was trained on."
        )
    grid = tuple(tokenizer.grid_size(image_size))
    if grid != (config.grid_h, config.grid_w):
        size = f" from {image_size}x{image_size} images (`resolution`)" if image_size else ""
        raise ValueError(
            f"`{argument}` makes a {grid} token grid{size} but the model expects ({config.grid_h}, {config.grid_w})."
        )
    recorded = getattr(config, "tokenizer_fingerprint", None)
    found = weights_fingerprint(tokenizer) if recorded else None
    if found is not None and found != recorded:
        raise ValueError(
            f"`{argument}` is not the tokenizer the model learned: its weights' fingerprint {found} differs from the "
            f"{recorded} the model's config records, so its codes would decode to other pictures. Use the model's own "
            "tokenizer (to decode with this one on purpose, set `model.config.tokenizer_fingerprint = None`)."
        )


def recorded_class_names(config) -> list[str] | None:
    """The class names a model `config` recorded (`id2label`, which the training scripts write), or None where it
    recorded none: no entry per class, or transformers' default `LABEL_i` names."""
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    if config.num_classes == 0 or len(id2label) != config.num_classes or set(id2label) != set(range(config.num_classes)):
        return None
    names = [str(id2label[i]) for i in range(config.num_classes)]
    return None if names == [f"LABEL_{i}" for i in range(config.num_classes)] else names


def check_dataset_matches(config, class_names: list[str], argument: str = "dataset") -> None:
    """Raise `ValueError` naming `argument` unless a dataset with classes `class_names` is the one the model `config`
    was trained on, as far as the config tells: as many classes, and the same names where the config recorded them
    (`id2label`, which the training scripts write; transformers' default `LABEL_i` names are not compared)."""
    if config.num_classes == 0:
        return
    if len(class_names) != config.num_classes:
        raise ValueError(f"`{argument}` has {len(class_names)} classes but the model was trained on "
                         f"{config.num_classes}: use the dataset the model was trained on.")
    recorded = recorded_class_names(config)
    if recorded is not None and recorded != list(class_names):
        raise ValueError(f"`{argument}` has the classes {list(class_names)[:4]}... but the model was trained on "
                         f"{recorded[:4]}...: use the dataset the model was trained on.")


# `generate` arguments that set the sequence length: `sample_images` always draws whole images.
LENGTH_ARGUMENTS = frozenset({"max_new_tokens", "max_length", "min_new_tokens", "min_length"})


def class_prompts(model: VQGPTForCausalLM, labels: torch.Tensor | list[int] | int, first: int = 0) -> torch.LongTensor:
    """Prompts `(B, 1)` for a batch, on the model's device.

    Args:
        labels: class ids `(B,)`; or a batch size `B`, to cycle through the classes `first, first + 1, ...`
            (modulo `num_classes`).
        first: the class of the first row when `labels` is a batch size.

    An unconditional model (`num_classes=0`) gets `B` null prompts either way.
    """
    num_classes = model.config.num_classes
    if isinstance(labels, bool):
        raise ValueError(f"`labels` must be class ids or a batch size (an integer >= 1), got {labels!r}.")
    if isinstance(labels, int):  # a Python int only: a tensor or NumPy scalar is a class id, as before
        if labels < 1:
            raise ValueError(f"`labels` as a batch size must be an integer >= 1, got {labels!r}.")
        if not _is_int(first):
            raise ValueError(f"`first` must be an integer class id, got {first!r}.")
        labels = (first + torch.arange(labels)) % max(num_classes, 1)
    if num_classes == 0:
        try:
            batch = len(labels)
        except TypeError:
            batch = 0
        if batch < 1:
            raise ValueError(f"`labels` must be a batch size (an integer >= 1) or a non-empty batch of class ids, got "
                             f"{labels!r}.")
        return model.class_prompt(None, batch_size=batch)
    return model.class_prompt(labels)


def sequence_codes(sequences: torch.LongTensor, config) -> torch.LongTensor:
    """Token sequences `(B, 1 + h*w)` (prompt token, then the codes) -> code grids `(B, h, w)`.

    Raises `ValueError` naming `sequences` unless they are whole sequences of the model `config`'s grid: an integer
    tensor `(B, 1 + grid_h * grid_w)` whose codes are in `[0, codebook_size)` (e.g. not cut short by a
    `max_new_tokens`)."""
    length = 1 + config.grid_h * config.grid_w
    if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2 or sequences.shape[1] != length:
        shape = tuple(sequences.shape) if isinstance(sequences, torch.Tensor) else type(sequences).__name__
        raise ValueError(f"`sequences` must be whole token sequences (B, {length}) (prompt token + the "
                         f"{config.grid_h}x{config.grid_w} grid's codes), got {shape}: generate the whole grid "
                         "(no shorter `max_new_tokens` / `max_length`).")
    if sequences.is_floating_point() or sequences.is_complex() or sequences.dtype == torch.bool:
        raise ValueError(f"`sequences` must be integer token ids, got {sequences.dtype}.")
    codes = sequences[:, 1:]
    if codes.numel() and (codes.min() < 0 or codes.max() >= config.codebook_size):
        raise ValueError(f"`sequences` hold codes outside [0, {config.codebook_size}) after the prompt token (min "
                         f"{int(codes.min())}, max {int(codes.max())}): not sequences of this model's codebook.")
    return codes.reshape(-1, config.grid_h, config.grid_w)


@torch.no_grad()
def decode_sequences(tokenizer, sequences: torch.LongTensor, config) -> torch.Tensor:
    """Token sequences `(B, 1 + h*w)` -> images `(B, C, H, W)` (about [-1, 1]) through `tokenizer`, on its device.
    `ValueError` when `tokenizer` has another codebook or grid than `config` (its codes would be looked up in another
    codebook)."""
    check_tokenizer_matches(tokenizer, config)
    device = next(iter(tokenizer.parameters()), torch.empty(0)).device
    return tokenizer.decode_from_indices(sequence_codes(sequences, config).to(device))


@torch.no_grad()
def sample_images(
    model: VQGPTForCausalLM, tokenizer, labels=None, num_images: int | None = None, **generate_kwargs
) -> tuple[torch.Tensor, torch.LongTensor]:
    """Sample images for class ids `labels` (or `num_images` unconditional ones) with `model.generate`.

    `generate_kwargs` go to `generate` (`do_sample`, `top_k`, `cfg_scale`, `assistant_model`, ...); the whole grid is
    always drawn, so length arguments (`max_new_tokens`, `max_length`, ...) are refused. `num_images` with `labels`
    must be their number (one prompt per label). With `num_return_sequences=k` every prompt gives `k` images, next
    to each other as `generate` returns them: `B = k * len(labels)` (or `k * num_images`), label `i`'s in rows
    `i * k` to `i * k + k - 1`.
    Returns `(images (B, 3, H, W) in [-1, 1], codes (B, h, w))`.
    """
    if num_images is not None and (not _is_int(num_images) or num_images < 1):
        raise ValueError(f"`num_images` must be an integer >= 1 or None, got {num_images!r}.")
    lengths = sorted(LENGTH_ARGUMENTS & set(generate_kwargs))
    if lengths:
        raise ValueError(f"`{lengths[0]}` is not an argument of `sample_images`: it always draws the whole "
                         f"{model.config.grid_h}x{model.config.grid_w} grid of every image.")
    if generate_kwargs.get("return_dict_in_generate"):
        raise ValueError("`return_dict_in_generate` is not an argument of `sample_images`: it returns the images and "
                         "their codes; call `model.generate` for generate's output object.")
    check_tokenizer_matches(tokenizer, model.config)
    if labels is None:
        if num_images is None:
            raise ValueError("`sample_images` needs `labels` (class ids, one image each) or `num_images` (that many "
                             "unconditional images); got neither.")
        prompt = model.class_prompt(None, batch_size=num_images)
    else:
        prompt = model.class_prompt(labels)
        if num_images is not None and num_images != len(prompt):
            raise ValueError(f"`num_images` {num_images} disagrees with the {len(prompt)} `labels` (one image per "
                             "label): give one of them, or as many labels as images.")
    sequences = model.generate(prompt, **generate_kwargs)  # the default max_length is the whole grid
    return decode_sequences(tokenizer, sequences, model.config), sequence_codes(sequences, model.config)


def check_sampling_options(model, options: dict[str, str] | None = None, gamma: int | None = None, **settings) -> None:
    """The sampler's own `check_sampling_arguments` for a script's settings, run before any work.

    Args:
        model: the model that will be sampled (its classes decide whether guidance is allowed; its grid bounds gamma).
        options: sampler argument -> the option the user set, e.g. `{"cfg_scale": "guidance_scale"}`, so that the
            `ValueError` names the option the user knows.
        gamma: draft tokens per round, if drafting: at most the grid's token count, as `speculative_sample` requires.
        settings: keyword arguments of `plain_sample` / `speculative_sample` (`temperature`, `top_k`, `top_p`,
            `cfg_scale`, `generator`).
    """
    try:
        check_sampling_arguments(model, class_prompts(model, 1), **settings)
        grid = model.config.num_image_tokens
        if gamma is not None and (not _is_int(gamma) or not 1 <= gamma <= grid):
            raise ValueError(f"`gamma` must be in [1, {grid}] (the model's {grid}-token grid), got {gamma}.")
    except ValueError as error:
        message = str(error)
        for argument, option in (options or {}).items():
            message = message.replace(f"`{argument}`", f"`{option}`")
        raise ValueError(message) from None
