"""A class-conditional GPT over VQ image tokens, as a transformers `PreTrainedModel` with `generate()`.

Reads top to bottom like `modeling_gpt2.py`: attention -> MLP -> block -> `VQGPTPreTrainedModel` -> `VQGPTModel`
-> `VQGPTForCausalLM`. Class conditioning is a prefix token with an extra null class for classifier-free guidance
(LlamaGen). The KV cache is any transformers `Cache` (`DynamicCache` by default; `StaticCache` and the project's
`RaggedCache` work too) and transformers' `create_causal_mask` builds the mask: bottom-right aligned, so a k-token
pass on top of a cache (the verify pass of speculative decoding) sees exactly what k single steps would, and a 4-D
mask from the caller (rows with their own lengths) passes through unchanged. Positions double as cache slots.

This file imports nothing from `hf_specdec` except its config and the generate()-argument handling beside it
(`generation_vqgpt.py`), so it loads with `trust_remote_code=True`.
"""

import math
import os
import re
import warnings

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from .configuration_vqgpt import VQGPTConfig, _is_int
from .generation_vqgpt import check_cfg_scale, check_generate_kwargs, generate_settings


class VQGPTAttention(nn.Module):
    def __init__(self, config: VQGPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        B, T, C = hidden_states.shape
        q, k, v = self.c_attn(hidden_states).split(C, dim=-1)
        q, k, v = (x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2) for x in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            # A position is also a cache slot: caches that write per row (RaggedCache) read it, others ignore it.
            k, v = cache.update(k, v, self.layer_idx, cache_position=position_ids)  # (B, nh, L, hs)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            # No mask means a plain causal pass from an empty cache, or one query that sees every key.
            is_causal=attention_mask is None and T > 1,
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class VQGPTMLP(nn.Module):
    def __init__(self, config: VQGPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(hidden_states), approximate="tanh")))


class VQGPTBlock(nn.Module):
    def __init__(self, config: VQGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = VQGPTAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VQGPTMLP(config)

    def forward(self, hidden_states, attention_mask, position_ids, cache=None):
        hidden_states = hidden_states + self.attn(self.ln_1(hidden_states), attention_mask, position_ids, cache)
        return hidden_states + self.mlp(self.ln_2(hidden_states))

    @torch.no_grad()
    def copy_from(self, source: "VQGPTBlock") -> "VQGPTBlock":
        """Load `source`'s weights. An MLP wider than `source`'s keeps its extra units' (random) input weights and
        gets zero output weights for them (Net2Net-style widening): the block computes what `source` computes and
        the extra units start learning from there. A block `k` times as wide (`k` times the heads of the same size)
        gets `source`'s weights tiled: on `k` copies of `source`'s input it returns `k` copies of its output."""
        state = source.state_dict()
        C, width = source.ln_1.normalized_shape[0], self.ln_1.normalized_shape[0]
        if width != C:
            if width % C or self.attn.head_dim != source.attn.head_dim:
                raise ValueError(f"A block of width {width} starts from one of width {C} only at a multiple of it, "
                                 "with the same head size.")
            state = _tiled_block_state(state, width // C)
        n, wide = state["mlp.c_fc.weight"].shape[0], self.mlp.c_fc.out_features
        if wide < n:
            tiled = f", {width // C} times as wide as it" if width != C else ""
            raise ValueError(f"`intermediate_size` must be >= {n} (the source block's{tiled}) to start from it, got {wide}.")
        if wide > n:
            own = self.state_dict()
            for name in ("mlp.c_fc.weight", "mlp.c_fc.bias"):
                state[name] = torch.cat([state[name], own[name][n:]])
            state["mlp.c_proj.weight"] = torch.cat([state["mlp.c_proj.weight"], own["mlp.c_proj.weight"][:, n:].zero_()], 1)
        self.load_state_dict(state)
        return self


def _tiled_block_state(state: dict, k: int) -> dict:
    """A block's weights for `k` copies of its residual stream: every input width `k` times (each copy carries
    `1 / k` of the sum), every output `k` times, the attention's q, k and v each tiled, so the heads come as `k`
    groups of the original ones."""
    def tile(weight, rows, cols):
        return weight.repeat(rows, cols) / cols

    tiled = {}
    for name, value in state.items():
        if name.startswith(("ln_1", "ln_2")):
            tiled[name] = value.repeat(k)
        elif name == "attn.c_attn.weight":
            tiled[name] = torch.cat([tile(w, k, k) for w in value.chunk(3)])
        elif name == "attn.c_attn.bias":
            tiled[name] = torch.cat([b.repeat(k) for b in value.chunk(3)])
        elif name.endswith(".weight"):
            tiled[name] = tile(value, k, k)
        else:
            tiled[name] = value.repeat(k)
    return tiled


def describe_ids(ids) -> str:
    """What an argument that should be a tensor of token ids is, for an error message: `a torch.float32 tensor`, or
    `a numpy.ndarray (torch.from_numpy(...) makes it a tensor)` (its dtype alone, int64, read as if it were right)."""
    if isinstance(ids, torch.Tensor):
        return f"a {ids.dtype} tensor"
    kind = f"{type(ids).__module__}.{type(ids).__qualname__}".removeprefix("builtins.")
    return f"a {kind}" + (" (torch.from_numpy(...) makes it a tensor)" if kind == "numpy.ndarray" else "")


def check_model_path(name, cls_name: str, subfolder: str | None = None) -> None:
    """`ValueError` for a file given where a model folder is expected (transformers read a `config.json` given as
    the path, then unpickled the same file as weights: `UnpicklingError`) and for a folder without config.json (a
    model of the default size was built and its weights reported as mismatched), `FileNotFoundError` for a
    local-looking path or `subfolder` that does not exist (reported as a malformed Hub repo id, a network failure or
    a missing weights file in the parent)."""
    if not isinstance(name, (str, os.PathLike)):
        return
    path = os.fspath(name)
    if os.path.isdir(path):
        folder = os.path.join(path, subfolder) if subfolder else path
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{path!r} has no sub-folder {subfolder!r}.")
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ValueError(f"{folder!r} holds no config.json: it is not a saved model folder (`{cls_name}."
                             "save_pretrained` writes config.json next to the weights).")
        return
    if os.path.isfile(path):
        raise ValueError(f"{path!r} is a file: give `{cls_name}.from_pretrained` the model's folder "
                         f"({os.path.dirname(path) or '.'!r}), which holds its config.json and weights.")
    if not os.path.exists(path) and (os.path.isabs(path) or path.startswith(("./", "../", "~")) or path.count("/") > 1):
        raise FileNotFoundError(f"There is no folder {path!r}{relative_path_hint(path)}, and it is not a Hub repo id "
                                "(`name` or `namespace/name`) either.")


def relative_path_hint(path: str) -> str:
    """Where a relative `path` that does not exist was looked for: the shipped checkpoint sets are named relative to
    the repository root, and a script run from another folder found none of them without saying why."""
    if os.path.isabs(os.path.expanduser(path)):
        return ""
    return (f" (a relative path, looked for in the working directory {os.getcwd()!r}: run from the folder it is "
            "relative to, e.g. the repository root for `checkpoints/...`, or give an absolute path)")


def check_loaded_keys(name, cls_name: str, info: dict) -> None:
    """`ValueError` when the weights file does not hold exactly the model its config.json describes: transformers
    initialised missing weights at random and dropped unexpected ones, with a printed report only (a config.json of
    2 layers beside 1-layer weights sampled with a random block; a Hub repo pushed twice served a stale
    `model.safetensors` next to the new shards). The head of a causal-LM checkpoint loaded as the trunk is expected."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(k for k in info.get("unexpected_keys") or () if k != "lm_head.weight" or cls_name != "VQGPTModel")
    if missing or unexpected:
        few = lambda keys: ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")  # noqa: E731
        raise ValueError(
            f"The weights of {str(name)!r} do not fit its config.json"
            + ": " + "; ".join([f"missing {few(missing)}"] * bool(missing)
                               + [f"unexpected {few(unexpected)}"] * bool(unexpected))
            + ". The config and the weights come from "
            "different saves (an edited config.json, files of two saves mixed in one folder or repo): save the model "
            "again with `save_pretrained`, or download it again."
        )


class VQGPTPreTrainedModel(PreTrainedModel):
    config_class = VQGPTConfig
    config: VQGPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    _no_split_modules = ["VQGPTBlock"]
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, safetensors only: `use_safetensors` defaults to True, so a folder or
        repo that holds only a pickled `pytorch_model.bin` raises instead of being unpickled. A damaged (truncated)
        safetensors file raises `OSError` naming the model and what to do, not the library's bare header error. Weights
        that do not fit the config (missing or unexpected ones) raise `ValueError` (`check_loaded_keys`)."""
        kwargs.setdefault("use_safetensors", True)
        check_model_path(pretrained_model_name_or_path, cls.__name__, kwargs.get("subfolder"))
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                                  **kwargs)
        except TypeError as error:  # a keyword that is neither `from_pretrained`'s nor a config field reaches __init__
            key = re.search(r"unexpected keyword argument '(\w+)'", str(error))
            if key is None:
                raise
            use = cls.config_class.field_for(key[1])
            raise ValueError(
                f"`{key[1]}` is neither an argument of `from_pretrained` nor a {cls.config_class.__name__} field"
                + (f": use `{use}`." if use else f". The fields, which `from_pretrained` overrides: "
                   f"{cls.config_class.field_names()}.")
            ) from None
        except SafetensorError as error:
            where = os.path.join(str(pretrained_model_name_or_path), "model.safetensors")
            raise OSError(
                f"The weights of {str(pretrained_model_name_or_path)!r} ({where}) are damaged: {error}. The file was "
                "cut short (an interrupted download, copy or save): download the model again "
                "(`from_pretrained(..., force_download=True)` for a Hub repo), or copy or save it again."
            ) from None
        check_loaded_keys(pretrained_model_name_or_path, cls.__name__, info)
        return (model, info) if output_loading_info else model

    def _init_weights(self, module):
        super()._init_weights(module)
        # GPT-2: scale the residual output projections (`c_proj` in attention and MLP) by 1/sqrt(2 * n_layer).
        if isinstance(module, (VQGPTAttention, VQGPTMLP)):
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.c_proj.weight, mean=0.0, std=std)


class VQGPTModel(VQGPTPreTrainedModel):
    """The transformer trunk: token + learned position embeddings, pre-LN blocks, final LayerNorm."""

    def __init__(self, config: VQGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([VQGPTBlock(config, i) for i in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, value):
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        num_layers: int | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        input_ids (`(B, T)`): token ids; with a cache, only the tokens not yet in it.
        cache (`Cache`): keys/values of earlier tokens, updated in place.
        attention_mask (`(B, L)`): 1 for real tokens, 0 for padding, over cached + new tokens; or a boolean
            `(B, 1, T, L)` mask used as given (rows with their own lengths, see `RaggedCache`).
        position_ids (`(B, T)`): positions, which are also the cache slots; default: continue after the cache.
        num_layers (`int`): run only the first `num_layers` blocks (self-speculative drafting), then `ln_f`.
        output_hidden_states (`bool`): also return `hidden_states`, as in GPT-2: the embeddings, the output of every
            block, the last one after `ln_f` (what a feature-conditioned draft reads).
        """
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        cache = cache if use_cache else None
        T = input_ids.shape[1]
        inputs_embeds = self.wte(input_ids)  # (B, T, C)
        if position_ids is None:
            # An int for dynamic caches, a 0-d device tensor for static ones: never a host sync.
            past_length = cache.get_seq_length() if cache is not None else 0
            if isinstance(past_length, int) and past_length + T > self.config.max_position_embeddings:
                raise ValueError(
                    f"Sequence of {past_length + T} tokens exceeds the {self.config.max_position_embeddings} "
                    f"positions of the {self.config.grid_h}x{self.config.grid_w} token grid (+1 prompt token)."
                )
            positions = (past_length + torch.arange(T, device=input_ids.device)).unsqueeze(0)
        else:
            positions = position_ids
        mask = create_causal_mask(self.config, inputs_embeds, attention_mask, cache, position_ids=position_ids)
        hidden_states = self.drop(inputs_embeds + self.wpe(positions))
        all_hidden_states = ()
        for block in self.h if num_layers is None else self.h[:num_layers]:
            all_hidden_states += (hidden_states,)
            hidden_states = block(hidden_states, mask, positions, cache)
        hidden_states = self.ln_f(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache,
                                       hidden_states=all_hidden_states + (hidden_states,) if output_hidden_states else None)


def guided_logits(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance from logits of `[conditional; unconditional]` rows `(2B, ...)`: `log_softmax(u) + s
    (log_softmax(c) - log_softmax(u))`, unnormalised log-probabilities whose softmax is the guided distribution
    (transformers' `guidance_scale` combination)."""
    cond, uncond = logits.float().log_softmax(-1).chunk(2, dim=0)
    return uncond + cfg_scale * (cond - uncond)


def check_weights_loaded(model, argument: str = "model") -> None:
    """Raise `ValueError` naming `argument` when `model` has weights on the meta device (made under accelerate's
    `init_empty_weights()` or moved `.to("meta")`): it has shapes but no values, and failed deep in a value check."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError(f"`{argument}` is on the meta device: its weights are not loaded. Load it with "
                         "`from_pretrained`, or `to_empty(device=...)` and then `load_state_dict`.")


def _cached_rows(cache: Cache | None) -> int:
    """Rows a cache holds, -1 if empty. Static caches record it (`batch_size`); a `DynamicCache` does not, so its
    first layer's keys are asked (a shape, not a value: no host sync)."""
    if cache is None or not cache.is_initialized:
        return -1
    rows = cache.batch_size
    if rows < 0 and cache.layers[0].keys is not None and cache.layers[0].keys.dim() == 4:
        rows = cache.layers[0].keys.shape[0]
    return rows


def code_loss(loss_function, logits, labels, codebook_size: int, num_items_in_batch=None) -> torch.Tensor:
    """The mean next-token cross-entropy over the image codes of `labels` (class tokens and -100 are no targets), by
    transformers' causal-LM `loss_function`. Labels without a single code target (a prompt alone, all -100) give 0, an
    empty sum, not the NaN of a mean over nothing that would poison a training run; counted on the device, no sync.
    `num_items_in_batch` (a trainer's count over accumulated batches) replaces the count."""
    targets = labels.masked_fill(labels >= codebook_size, -100)
    if num_items_in_batch is None:
        num_items_in_batch = (targets[:, 1:] != -100).sum().clamp(min=1)
    return loss_function(logits, targets, vocab_size=codebook_size, num_items_in_batch=num_items_in_batch)


class VQGPTForCausalLM(VQGPTPreTrainedModel, GenerationMixin):
    """VQGPT with a head over the `codebook_size` image codes only: class tokens can never be generated.

    Classifier-free guidance runs inside `forward` when `cfg_scale` is given (also through `generate(...,
    cfg_scale=s)` and assisted generation): the batch is doubled with the class token replaced by the null token,
    and the returned logits are `log_softmax(u) + s * (log_softmax(c) - log_softmax(u))`, the same combination as
    transformers' `guidance_scale` processor. The cache then holds `2B` rows; use the same `cfg_scale` for every
    call on one cache.
    """

    def __init__(self, config: VQGPTConfig):
        super().__init__(config)
        self.transformer = VQGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.codebook_size, bias=False)
        self.post_init()
        self.generation_config.pad_token_id = config.pad_token_id
        self.generation_config.bos_token_id = config.bos_token_id
        # Defaults read when this model is the *assistant* of HF assisted generation. The stock confidence
        # threshold (0.4) stops drafts after ~1 token on flat image-token distributions; a fixed draft length
        # suits a distilled draft whose acceptance is steady.
        self.generation_config.num_assistant_tokens = 5
        self.generation_config.num_assistant_tokens_schedule = "constant"
        self.generation_config.assistant_confidence_threshold = 0.0

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; the config's `auto_map` also names the trunk, so that
        `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it without this package (transformers
        writes only the saved class's entry)."""
        if self._auto_class is not None:
            module = type(self).__module__.split(".")[-1]
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": f"{module}.VQGPTModel"}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def num_layers(self) -> int:
        """Blocks one forward runs (the same attribute as `EarlyExitDraft.num_layers`, so any draft answers it)."""
        return self.config.num_hidden_layers

    # -- prompts ---------------------------------------------------------------------------------------------
    def class_prompt(self, labels=None, batch_size: int | None = None) -> torch.LongTensor:
        """Prompt `(B, 1)` for class ids `labels` (`(B,)` ints), or the null token when `labels` is None.

        Unconditional models (`num_classes=0`) take `labels=None` and a `batch_size`.
        """
        config = self.config
        check_weights_loaded(self)
        device = self.lm_head.weight.device
        if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if labels is None:
            if batch_size is None:
                raise ValueError("`batch_size` must be a positive integer when `labels` is None (null-token prompts).")
            return torch.full((batch_size, 1), config.null_token_id, dtype=torch.long, device=device)
        try:  # as given, so that 1.5 or "3" is refused instead of truncated or misread
            labels = torch.as_tensor(labels, device=device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"`labels` must be integer class ids, got {labels!r}.") from error
        if labels.dim() > 1:  # flattened, it gave one prompt per entry without a word
            raise ValueError(f"`labels` must be a flat batch of class ids (shape (B,)), got shape {tuple(labels.shape)}.")
        labels = labels.reshape(-1)
        if labels.numel() == 0:  # (before the dtype: torch makes `[]` float32)
            raise ValueError("`labels` is empty: give at least one class id.")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"`labels` must be integer class ids, got {labels.dtype} values {labels.tolist()}.")
        labels = labels.long()
        if batch_size is not None and batch_size != labels.numel():
            raise ValueError(f"`batch_size` {batch_size} disagrees with the {labels.numel()} `labels`: give one of them.")
        if config.num_classes == 0:
            raise ValueError("`labels` must be None: this model is unconditional (num_classes=0).")
        if labels.numel() == 0 or labels.min() < 0 or labels.max() >= config.num_classes:
            raise ValueError(f"`labels` must be class ids in [0, {config.num_classes}), got {labels.tolist()}.")
        return (config.codebook_size + labels).unsqueeze(1)

    def check_guidance(self, input_ids: torch.Tensor, cfg_scale) -> None:
        """Raise `ValueError` when guidance (`cfg_scale`) is asked for prompts that all start with the null token:
        their conditional and unconditional rows are the same, so the guidance would do nothing at twice the cost."""
        if cfg_scale is None or cfg_scale == 1.0 or self.config.num_classes == 0:
            return  # (a model without classes refuses guidance itself)
        if bool((input_ids[:, 0] == self.config.null_token_id).all()):
            raise ValueError(f"`cfg_scale` {cfg_scale} with null-token (unconditional) prompts only: guidance pushes "
                             "towards a class, and these prompts have none; it would change nothing. Drop `cfg_scale`, "
                             "or prompt classes with `class_prompt(labels)`.")

    def check_prompt(self, input_ids: torch.Tensor, max_new_tokens: int | None = None) -> None:
        """Raise `ValueError` unless `input_ids` is `[class or null token, codes...]` and fits the grid."""
        config = self.config
        check_weights_loaded(self)
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32):
            raise ValueError("`input_ids` must be a torch.long (or int32) tensor of shape (batch, length >= 1), e.g. "
                             f"`model.class_prompt(labels)`; got {describe_ids(input_ids)}.")
        if input_ids.is_meta:
            raise ValueError("`input_ids` is on the meta device: it holds no values; make the prompt on the model's "
                             "device (`model.class_prompt(labels)`).")
        if input_ids.dim() != 2 or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
            raise ValueError(f"`input_ids` must have shape (batch >= 1, length >= 1), got {tuple(input_ids.shape)}.")
        if max_new_tokens is not None and not _is_int(max_new_tokens):
            raise ValueError(f"`max_new_tokens` must be an integer, got {max_new_tokens!r}.")
        first = input_ids[:, 0]
        if (first < config.codebook_size).any() or (first > config.null_token_id).any():
            raise ValueError(
                f"`input_ids` must start with a class token in [{config.codebook_size}, {config.null_token_id}] "
                "(use `model.class_prompt(labels)`)."
            )
        if input_ids.shape[1] > 1 and ((input_ids[:, 1:] < 0) | (input_ids[:, 1:] >= config.codebook_size)).any():
            raise ValueError(f"`input_ids` after the class token must be image codes in [0, {config.codebook_size}).")
        if max_new_tokens is not None:
            room = config.max_position_embeddings - input_ids.shape[1]
            if max_new_tokens > room:
                raise ValueError(
                    f"`max_new_tokens`={max_new_tokens} does not fit the {config.grid_h}x{config.grid_w} token grid: "
                    f"at most {room} tokens follow a prompt of length {input_ids.shape[1]}."
                )

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cfg_scale: float | None = None,
        num_layers: int | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        input_ids (`(B, T)`): `[class, codes...]`, or only the new tokens when `cache` holds the rest.
        labels (`(B, T)`): targets aligned with `input_ids` (shifted inside); -100 or the class token position is
            ignored. The loss is the mean cross-entropy over image codes (0 when there are none).
        logits_to_keep (`int`): compute logits for the last `logits_to_keep` positions only (0 = all).
        cfg_scale (`float`): classifier-free guidance scale; None or 1 disables it.
        num_layers (`int`): use only the first `num_layers` blocks (the self-speculative draft).
        output_hidden_states (`bool`): also return the trunk's `hidden_states` (every row: with guidance `2B`).

        Returns `CausalLMOutputWithPast` with `logits` `(B, T', codebook_size)`.
        """
        guided = cfg_scale is not None and cfg_scale != 1.0
        if guided:
            check_cfg_scale(cfg_scale)
            input_ids, attention_mask, position_ids = self._double_for_guidance(
                input_ids, cache, attention_mask, position_ids
            )
        outputs = self.transformer(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            num_layers=num_layers,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)  # (B, T', K)
        if guided:
            logits = guided_logits(logits, cfg_scale)

        loss = None
        if labels is not None:
            if (not isinstance(labels, torch.Tensor) or labels.shape != input_ids.shape or labels.is_floating_point()
                    or labels.dtype == torch.bool):
                raise ValueError(f"`labels` must be integer token ids of the same shape as `input_ids` "
                                 f"{tuple(input_ids.shape)} (usually `labels=input_ids`), got {describe_ids(labels)}"
                                 f"{' of shape ' + str(tuple(labels.shape)) if hasattr(labels, 'shape') else ''}.")
            if logits.shape[1] != labels.shape[1]:
                raise ValueError("`labels` needs logits for every position: leave `logits_to_keep` at 0.")
            loss = code_loss(self.loss_function, logits, labels, self.config.codebook_size,
                             kwargs.get("num_items_in_batch"))
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states)

    def _double_for_guidance(self, input_ids, cache, attention_mask, position_ids):
        """Stack `[conditional; unconditional]` rows: the unconditional rows have the null token wherever the
        conditional ones have a class token (only the prompt has one), so no pass needs to ask the cache where it is."""
        if self.config.num_classes == 0:
            raise ValueError("`cfg_scale` needs a class-conditional model (num_classes > 0).")
        B = input_ids.shape[0]
        cached_rows = _cached_rows(cache)
        if cached_rows > 0 and cached_rows != 2 * B:
            raise ValueError(
                f"`cfg_scale` was not used when this cache was filled ({cached_rows} cached rows for batch {B})."
            )
        uncond_ids = input_ids.masked_fill(input_ids >= self.config.codebook_size, self.config.null_token_id)
        input_ids = torch.cat([input_ids, uncond_ids])
        if attention_mask is not None and attention_mask.shape[0] == B:  # a batch-1 4-D mask broadcasts as it is
            attention_mask = torch.cat([attention_mask, attention_mask])
        if position_ids is not None and position_ids.shape[0] == B:
            position_ids = torch.cat([position_ids, position_ids])
        return input_ids, attention_mask, position_ids

    # -- generation ------------------------------------------------------------------------------------------
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate` after checking the prompt and length against the token grid.

        `inputs` is the `(B, 1)` class prompt from `class_prompt` (or a longer prefix of codes). By default the
        whole grid is generated. Pass `cfg_scale=s` for classifier-free guidance, `assistant_model=draft` for
        HF assisted generation. What transformers would misread is refused and what this model means by default is
        filled in by `generation_vqgpt.py`.
        """
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if input_ids is None:
            raise ValueError("`inputs` must be a class prompt of shape (batch, 1); see `class_prompt(labels)`.")
        max_new_tokens = kwargs.get("max_new_tokens")
        if max_new_tokens is None and generation_config is not None:
            max_new_tokens = generation_config.max_new_tokens
        self.check_prompt(input_ids, max_new_tokens)
        check_generate_kwargs(self, generation_config if generation_config is not None else self.generation_config,
                              kwargs)
        self.check_guidance(input_ids, kwargs.get("cfg_scale"))
        generation_config, kwargs = generate_settings(self, input_ids, generation_config, kwargs, max_new_tokens)
        if self.training and self.config.dropout > 0:  # the project's samplers refuse it; a draft may mean it
            warnings.warn(f"{type(self).__name__} is in training mode with dropout {self.config.dropout}: its samples "
                          "do not follow the model's distribution (call `model.eval()` first).", stacklevel=2)
        return super().generate(inputs, generation_config=generation_config, **kwargs)


VQGPTConfig.register_for_auto_class()
VQGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["VQGPTForCausalLM", "VQGPTModel", "VQGPTPreTrainedModel"]
