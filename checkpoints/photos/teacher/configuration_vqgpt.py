"""Configuration of the class-conditional VQ-token GPT (`model_type="vqgpt"`).

The vocabulary is laid out as in LlamaGen: the VQ codebook first, then one token per class, then one *null*
class token used for classifier-free guidance and as the start token of unconditional models::

    [0, codebook_size)                                   image codes (the only tokens the model predicts)
    [codebook_size, codebook_size + num_classes)          class tokens
    codebook_size + num_classes                           the null class

A sequence is `[class token, code_0, ..., code_{h*w-1}]`, raster order over the `grid_h x grid_w` token grid.

This file must import nothing from `hf_specdec`: it is copied next to saved weights so that a checkpoint loads
with `trust_remote_code=True` where the library is not installed.
"""

import difflib
import math
import numbers

import numpy as np
from transformers import GenerationConfig, PreTrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)


# Named sizes (LlamaGen-style registry). A preset fixes the depth; width and heads come from the config it is
# applied to, so every student shares the teacher's width (as in the seed project).
VQGPT_PRESETS: dict[str, dict] = {
    "teacher": {"num_hidden_layers": 12},
    "student-10L": {"num_hidden_layers": 10},
    "student-8L": {"num_hidden_layers": 8},
    "student-6L": {"num_hidden_layers": 6},
    "student-4L": {"num_hidden_layers": 4},
    "draft-2L": {"num_hidden_layers": 2},
    "draft-1L": {"num_hidden_layers": 1},
}
# The seed's `--student_id` numbering.
STUDENT_IDS: dict[int, str] = {1: "student-10L", 2: "student-8L", 3: "student-6L", 4: "student-4L"}
# Names other GPT configs use for these fields (GPT-2's, and plain synonyms): refused with the name to use, since a
# config keeps unknown keys as attributes and would otherwise build a model of the default size without a word.
FIELD_SYNONYMS: dict[str, str] = {
    "n_layer": "num_hidden_layers", "n_layers": "num_hidden_layers", "num_layers": "num_hidden_layers",
    "n_embd": "hidden_size", "d_model": "hidden_size", "n_head": "num_attention_heads", "n_heads": "num_attention_heads",
    "num_heads": "num_attention_heads", "n_inner": "intermediate_size", "ffn_dim": "intermediate_size",
    "vocab_size_codes": "codebook_size", "n_codes": "codebook_size", "num_codes": "codebook_size",
    "n_classes": "num_classes", "grid_size": "grid_h` and `grid_w", "resid_pdrop": "dropout",
    "layer_norm_epsilon": "layer_norm_eps",
}
# Keys that transformers itself passes to a config (loading, saving, the Hub) besides its fields.
_TRANSFORMERS_KEYS = {"model_type", "auto_map", "name_or_path", "torch_dtype", "num_labels", "output_attentions",
                      "output_hidden_states", "return_dict", "attn_implementation", "problem_type"}


class VQGPTConfig(PreTrainedConfig):
    r"""
    Args:
        codebook_size (`int`): number of VQ codes K; logits are over these K entries only.
        num_classes (`int`): number of class labels; 0 makes an unconditional model (prompt = the null token).
        grid_h, grid_w (`int`): the token grid; a full image is `grid_h * grid_w` tokens after the prompt.
        hidden_size, num_hidden_layers, num_attention_heads (`int`): transformer width, depth and heads.
        intermediate_size (`int`, *optional*): MLP width, defaults to `4 * hidden_size`.
        dropout (`float`): dropout on embeddings, residual branches and attention weights.
        class_dropout_prob (`float`): probability with which training replaces the class token by the null token,
            so that the same model also learns the unconditional distribution used by classifier-free guidance.
        layer_norm_eps, initializer_range (`float`): numerics of LayerNorm and the normal init.
        tokenizer_fingerprint (`str`, *optional*): a hash of the weights of the VQ tokenizer whose codes the model
            learned (`hf_specdec.pipeline.weights_fingerprint`, written by the training scripts): decoding
            with another tokenizer of the same codebook size and grid is refused, since its codes mean other
            pictures. None: not recorded, not checked.
    """

    model_type = "vqgpt"
    keys_to_ignore_at_inference = ["cache"]

    codebook_size: int = 512
    num_classes: int = 10
    grid_h: int = 8
    grid_w: int = 8
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    intermediate_size: int | None = None
    dropout: float = 0.0
    class_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    tokenizer_fingerprint: str | None = None
    # Derived from the fields above; accepted (and checked) so that saved configs round-trip.
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        self._check_unknown_keys(kwargs)
        for name in ("codebook_size", "grid_h", "grid_w", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:  # True is not a layer count
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not _is_int(self.num_classes) or self.num_classes < 0:
            raise ValueError(f"`num_classes` must be an integer >= 0 (0 = unconditional), got {self.num_classes!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        elif not _is_int(self.intermediate_size) or self.intermediate_size < 1:
            raise ValueError(f"`intermediate_size` must be a positive integer, got {self.intermediate_size!r}.")
        for name in ("dropout", "class_dropout_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")
        if not _is_number(self.initializer_range) or not 0.0 <= self.initializer_range < float("inf"):
            raise ValueError(f"`initializer_range` must be a finite number >= 0, got {self.initializer_range!r}.")
        if not _is_number(self.layer_norm_eps) or not 0.0 < self.layer_norm_eps < float("inf"):
            raise ValueError(f"`layer_norm_eps` must be a finite number > 0, got {self.layer_norm_eps!r}.")
        if self.tie_word_embeddings:  # the head (codebook_size rows) cannot share the embedding (vocab_size rows)
            raise ValueError(f"`tie_word_embeddings` must be False: the head predicts the {self.codebook_size} codes "
                             f"and the embedding holds codes, classes and the null token ({self.codebook_size} + "
                             f"{self.num_classes} + 1 rows), so they cannot be one matrix; got "
                             f"{self.tie_word_embeddings!r}.")

        # NumPy numbers pass the checks above; config.json holds Python ones.
        for name in ("codebook_size", "grid_h", "grid_w", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_classes", "intermediate_size"):
            setattr(self, name, int(getattr(self, name)))
        for name in ("dropout", "class_dropout_prob", "initializer_range", "layer_norm_eps"):
            setattr(self, name, float(getattr(self, name)))
        vocab_size = self.codebook_size + self.num_classes + 1
        if self.vocab_size is not None and self.vocab_size != vocab_size:
            raise ValueError(
                f"`vocab_size` is derived as codebook_size + num_classes + 1 = {vocab_size}, got {self.vocab_size}."
            )
        self.vocab_size = vocab_size
        max_positions = 1 + self.grid_h * self.grid_w
        if self.max_position_embeddings is not None and self.max_position_embeddings != max_positions:
            raise ValueError(
                f"`max_position_embeddings` is derived as 1 + grid_h * grid_w = {max_positions}, "
                f"got {self.max_position_embeddings}."
            )
        self.max_position_embeddings = max_positions
        # Image sequences all have the same length: nothing is padded and there is no end-of-sequence token. The
        # null token must not double as a pad token, or `generate()` would mask it out of null-class prompts.
        self.pad_token_id = None
        self.bos_token_id = self.null_token_id
        super().__post_init__(**kwargs)

    def _check_unknown_keys(self, kwargs: dict) -> None:
        """Refuse a key that is another name for one of this model's fields or a near miss of one (`n_layer`,
        `num_hidden_layer`): the config would keep it as an attribute and build a model of the default size. Other
        unknown keys are kept, as transformers keeps them, with a warning."""
        fields = [f for f in self.__dataclass_fields__ if not f.startswith("_")]
        generation = GenerationConfig._get_default_generation_params()  # transformers pops these from configs
        unknown = [k for k in kwargs if not k.startswith("_") and k not in _TRANSFORMERS_KEYS and k not in fields
                   and k not in generation]
        for key in unknown:
            use = self.field_for(key)
            if use is not None:
                raise ValueError(f"`{key}` is not a {type(self).__name__} field: use `{use}`.")
        if unknown:
            logger.warning(f"{type(self).__name__} has no fields {unknown}: kept as attributes, with no effect on the "
                           f"model. Its fields: {self.field_names()}.")

    @classmethod
    def field_names(cls) -> list[str]:
        """The fields this config class adds to transformers' (`codebook_size`, `num_hidden_layers`, ...)."""
        return sorted({f for c in cls.__mro__ if issubclass(c, VQGPTConfig) for f in c.__annotations__})

    @classmethod
    def field_for(cls, key: str) -> str | None:
        """The field that `key` most likely means: a synonym from other GPT configs, or a near miss of a field."""
        return FIELD_SYNONYMS.get(key) or next(iter(difflib.get_close_matches(key, cls.field_names(), n=1, cutoff=0.85)), None)

    @property
    def null_token_id(self) -> int:
        """Token id of the null class (classifier-free guidance; the prompt of unconditional models)."""
        return self.codebook_size + self.num_classes

    @property
    def num_image_tokens(self) -> int:
        return self.grid_h * self.grid_w

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """transformers' `get_config_dict`, refusing a checkpoint of another model type (transformers only warns and
        builds a model with missing weights: a feature draft's folder would load as a randomly initialised VQGPT)."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        found = config_dict.get("model_type")
        if found is None and "_class_name" in config_dict:  # a diffusers model's config (the VQ tokenizer)
            raise ValueError(f"{str(pretrained_model_name_or_path)!r} holds a diffusers `{config_dict['_class_name']}`, "
                             f"not a `{cls.model_type}` model: load it with its own class "
                             f"(`{config_dict['_class_name']}.from_pretrained`).")
        if found is not None and found != cls.model_type:
            raise ValueError(f"{str(pretrained_model_name_or_path)!r} holds a `{found}` model, not `{cls.model_type}`: "
                             "load it with its own class (`hf_specdec.hub.load_draft` picks the class of a draft).")
        return config_dict, kwargs

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> "VQGPTConfig":
        """A config of the named size (`VQGPT_PRESETS`); `kwargs` set the remaining fields."""
        if preset not in VQGPT_PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(VQGPT_PRESETS)}, got {preset!r}.")
        return cls(**{**kwargs, **VQGPT_PRESETS[preset]})

    def student_config(self, preset_or_layers: str | int, intermediate_size: int | None = None) -> "VQGPTConfig":
        """A config like this one (same codebook, classes, grid, width) with the depth of a preset or a layer count,
        and optionally another MLP width."""
        if isinstance(preset_or_layers, str):
            if preset_or_layers not in VQGPT_PRESETS:
                raise ValueError(f"`preset_or_layers` must be one of {sorted(VQGPT_PRESETS)} or an int.")
            num_layers = VQGPT_PRESETS[preset_or_layers]["num_hidden_layers"]
        else:
            num_layers = preset_or_layers
        fields = {**self.own_fields(), "num_hidden_layers": num_layers}
        if intermediate_size is not None:
            fields["intermediate_size"] = intermediate_size
        return type(self)(**fields)

    def own_fields(self) -> dict:
        """The config fields set by hand (derived ones and bookkeeping left out), to build a related config."""
        fields = {k: v for k, v in self.to_dict().items() if k in self.__dataclass_fields__}
        for derived in ("transformers_version", "architectures", "vocab_size", "max_position_embeddings", "dtype"):
            fields.pop(derived, None)
        return fields


__all__ = ["VQGPTConfig", "VQGPT_PRESETS", "STUDENT_IDS"]


def _is_int(value) -> bool:
    """An integer (NumPy's too), not a bool (`True` would pass as 1 layer or 1 class)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    """A real number (NumPy's too), not a bool, None or a string (`"1e-5"` from a hand-written config.json)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_finite_number(value) -> bool:
    """A finite real number (NaN and infinity pass `_is_number`)."""
    return _is_number(value) and math.isfinite(value)
