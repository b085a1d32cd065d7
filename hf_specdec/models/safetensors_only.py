"""Loading without unpickling for the project's diffusers models, and damaged safetensors files named clearly.

A truncated `*.safetensors` (an interrupted download, copy or save) makes the safetensors library raise
`SafetensorError: Error while deserializing header: ...`, naming no file. `damaged_safetensors` finds the files,
`damaged_weights_message` says which and what to do.
"""

import difflib
import functools
import inspect
import os
import re

import torch
from diffusers import ModelMixin
from safetensors import SafetensorError, safe_open

from .modeling_vqgpt import check_model_path


def damaged_safetensors(folder: str) -> list[str]:
    """`"<path> (<reason>)"` for every `*.safetensors` file directly in `folder` that does not open: truncated,
    empty, or not safetensors at all. Reads only the headers (safetensors checks that they cover the file)."""
    damaged = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith(".safetensors") or not os.path.isfile(path):
            continue
        try:
            with safe_open(path, framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            damaged.append(f"{path} ({' '.join(str(error).split())})")
    return damaged


def weights_folder(name: str, subfolder: str | None = None, cache_dir: str | None = None) -> str | None:
    """The local folder that `from_pretrained(name)` reads: `name` itself, or the Hub cache's snapshot of the repo
    id `name` (None if there is none)."""
    if os.path.isdir(name):
        folder = os.path.join(name, subfolder) if subfolder else name
        return folder if os.path.isdir(folder) else None
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(name, os.path.join(subfolder or "", "config.json"), cache_dir=cache_dir)
    except Exception:  # not a valid repo id: there is no cached folder to look at
        return None
    return os.path.dirname(config) if isinstance(config, str) else None


def damaged_weights_message(folder: str, damaged: list[str]) -> str:
    """What is wrong with the model folder `folder` and what to do about it."""
    return (f"the weights in {folder!r} are damaged: {'; '.join(damaged)}. The file was cut short (an interrupted "
            "download, copy or save): download the model again (`from_pretrained(..., force_download=True)` for a "
            "Hub repo), or copy or save it again.")


@functools.cache
def _diffusers_loading_keywords() -> frozenset[str]:
    """The keywords diffusers' `ModelMixin.from_pretrained` reads (`kwargs.pop("cache_dir", ...)`), read from its
    source once, so that they follow the installed version."""
    source = inspect.getsource(ModelMixin.from_pretrained)
    return frozenset(re.findall(r'kwargs\.pop\(\s*"(\w+)"', source)) | {"trust_remote_code", "return_unused_kwargs"}


class SafetensorsOnlyMixin:
    """Put before diffusers' `ModelMixin`: `from_pretrained` defaults to `use_safetensors=True`, so a folder or repo
    holding only a pickled `diffusion_pytorch_model.bin` raises instead of being unpickled; a damaged safetensors
    file raises `OSError` naming the folder, the file and what to do."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        kwargs.setdefault("use_safetensors", True)
        check_model_path(pretrained_model_name_or_path, cls.__name__, kwargs.get("subfolder"))
        cls._check_keywords(kwargs)
        config = cls._check_saved_class(pretrained_model_name_or_path, kwargs)
        if config is not None:
            cls._saved_defaults(config, kwargs)
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        except (SafetensorError, OSError) as error:  # diffusers wraps the SafetensorError in an OSError naming no cause
            folder = weights_folder(str(pretrained_model_name_or_path), kwargs.get("subfolder"), kwargs.get("cache_dir"))
            damaged = damaged_safetensors(folder) if folder else []
            if not damaged:
                raise
            raise OSError(f"Cannot load {cls.__name__}: {damaged_weights_message(folder, damaged)}") from error
        unused = sorted(info.get("unexpected_keys") or ())
        if unused:  # diffusers logs them and builds the model without them: another architecture, other outputs
            raise ValueError(f"{str(pretrained_model_name_or_path)!r} holds weights that a {cls.__name__} of its config "
                             f"has no place for: {', '.join(unused[:4])}{' and more' if len(unused) > 4 else ''}. Its "
                             "config.json does not describe the saved model (another class or library version saved "
                             "it); load it with the class that saved it.")
        return (model, info) if output_loading_info else model

    @classmethod
    def _saved_defaults(cls, config: dict, kwargs: dict) -> None:
        """Set in `kwargs` what the saved `config` leaves out and the saving class meant differently from this one's
        defaults (a subclass may override). Nothing by default."""

    @classmethod
    def _check_keywords(cls, kwargs: dict) -> None:
        """Refuse what diffusers would ignore without a word: a keyword that is neither a loading argument of its
        `from_pretrained` nor a field of this model's config (`num_vq_embedding=...`), and a dtype given as a string
        (diffusers loads float32 for `torch_dtype="bfloat16"`). A dtype string is turned into the `torch.dtype`."""
        for name in ("torch_dtype", "dtype"):
            value = kwargs.get(name)
            if isinstance(value, str):
                if not isinstance(getattr(torch, value, None), torch.dtype):
                    raise ValueError(f"`{name}` must be a torch.dtype or its name (float32, bfloat16, float16, ...), "
                                     f"got {value!r}.")
                kwargs[name] = getattr(torch, value)
        loading = _diffusers_loading_keywords()
        fields = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
        for key in kwargs:
            if key.startswith("_") or key in loading or key in fields:
                continue
            close = difflib.get_close_matches(key, [*fields, *loading], n=1, cutoff=0.8)
            raise ValueError(f"`{key}` is neither an argument of `from_pretrained` nor a {cls.__name__} config field"
                             + (f": use `{close[0]}`." if close else f". The fields, which `from_pretrained` overrides: "
                                f"{fields}."))

    @classmethod
    def _check_saved_class(cls, pretrained_model_name_or_path, kwargs) -> dict | None:
        """A `ValueError` when the folder's config was saved by another model class (e.g. a classifier's folder
        given as a tokenizer): diffusers would build this class from it and initialise every weight at random.
        Returns the saved config (None when it cannot be read here)."""
        names = {"subfolder", "cache_dir", "revision", "token", "local_files_only", "force_download", "proxies"}
        try:
            config = cls.load_config(pretrained_model_name_or_path, **{k: v for k, v in kwargs.items() if k in names})
        except (OSError, ValueError):
            return None  # no readable config: `from_pretrained` raises its own error
        saved = config.get("_class_name") if isinstance(config, dict) else None
        if saved is None and isinstance(config, dict) and config.get("model_type"):  # a transformers model's folder
            raise ValueError(f"{str(pretrained_model_name_or_path)!r} holds a transformers `{config['model_type']}` model "
                             f"({', '.join(config.get('architectures') or []) or 'no architectures named'}), not a "
                             f"{cls.__name__}.")
        accepted = {c.__name__ for c in cls.__mro__ if isinstance(c, type) and hasattr(c, "load_config")}
        if saved is not None and saved not in accepted:
            raise ValueError(f"{str(pretrained_model_name_or_path)!r} holds a {saved}, not a {cls.__name__} (its config.json "
                             f"names `_class_name` {saved!r}).")
        return config if isinstance(config, dict) else None
