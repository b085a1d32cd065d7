"""A preallocated transformers `Cache` whose rows have their own lengths, written where each token sits.

In batched speculative decoding every row accepts a different number of drafted tokens, so after a round the rows
hold different numbers of valid tokens. `RaggedCache` keeps one buffer `(rows, heads, max_cache_len, head_dim)` per
layer, allocated once, and writes every token's key/value at the slot of its position (`cache_position`, per row):
a row that rejected drafts simply writes its next tokens over the stale slots. Nothing is copied, concatenated or
allocated per step, and rewinding needs no call at all: the caller moves its own per-row length back and derives the
next positions and the bottom-right causal mask from it on the device (`SpeculativeDecoder._positions`).

It is still a transformers `Cache`: `generate(..., cache=RaggedCache(...))` works like a `StaticCache`, with the
length kept as a device tensor so that `get_seq_length()` never waits for the device.
"""

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class RaggedLayer(CacheLayerMixin):
    """One layer's preallocated keys/values `(rows, heads, max_cache_len, head_dim)`, written at per-row slots."""

    is_compileable = True
    is_sliding = False
    is_croppable = True

    def __init__(self, max_cache_len: int, owner: "RaggedCache"):
        super().__init__()
        self.max_cache_len = max_cache_len
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads, _, _ = key_states.shape
        self.device = key_states.device
        self.batch_size = rows
        self.keys = key_states.new_zeros(rows, heads, self.max_cache_len, key_states.shape[-1])
        self.values = value_states.new_zeros(rows, heads, self.max_cache_len, value_states.shape[-1])
        self.owner._initialize_lengths(rows, self.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, cache_position=None, **kwargs):
        """Write `key_states`/`value_states` `(rows, H, T, D)` at slots `cache_position` (`(rows, T)` or `(1, T)`);
        without it, after each row's current length. Returns the whole buffers."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if cache_position is None:
            cache_position = self.owner.lengths[:, None] + torch.arange(key_states.shape[2], device=self.device)
        index = cache_position.expand(key_states.shape[0], -1)[:, None, :, None]  # (rows, 1, T, 1)
        self.keys.scatter_(2, index.expand_as(key_states), key_states)
        self.values.scatter_(2, index.expand_as(value_states), value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.max_cache_len, 0

    def get_seq_length(self) -> torch.Tensor | int:
        return self.owner.get_seq_length()

    def get_max_length(self) -> int:
        return self.max_cache_len

    def crop(self, tokens_to_remove: int) -> None:
        pass  # the length lives in the owning cache, which crops it once for all layers

    def reset(self) -> None:
        pass  # stale slots are overwritten before they are read; the owner resets the length


class RaggedCache(Cache):
    """`Cache` of `num_layers` `RaggedLayer`s holding up to `max_cache_len` tokens per row.

    `lengths` `(rows,)` is a device tensor: after a forward it is `cache_position[:, -1] + 1` (one tiny kernel per
    forward, never a host read). The decoding engine passes `cache_position` and its own 4-D mask and ignores
    `lengths`; `generate()` and other callers that pass neither get `StaticCache` behaviour. With classifier-free
    guidance the model stores `2B` rows (conditional, then unconditional).

    Call `early_initialization(rows, heads, head_dim, dtype, device)` to allocate everything up front (needed before
    a compiled or graph-captured forward).
    """

    def __init__(self, num_layers: int, max_cache_len: int, track_lengths: bool = True):
        super().__init__(layers=[RaggedLayer(max_cache_len, self) for _ in range(num_layers)])
        self.max_cache_len = max_cache_len
        # A caller that keeps its own per-row lengths and always passes `cache_position` (the decoding engine)
        # turns this off: two kernels fewer per forward.
        self.track_lengths = track_lengths
        self.lengths: torch.Tensor | None = None

    def _initialize_lengths(self, rows: int, device) -> None:
        if self.lengths is None or self.lengths.shape[0] != rows or self.lengths.device != torch.device(device):
            self.lengths = torch.zeros(rows, dtype=torch.long, device=device)

    def update(self, key_states, value_states, layer_idx: int, *args, cache_position=None, **kwargs):
        keys, values = self.layers[layer_idx].update(key_states, value_states, cache_position=cache_position)
        if self.track_lengths and layer_idx == len(self.layers) - 1:  # all layers wrote the same slots: once
            T = key_states.shape[2]
            if cache_position is None:
                self.lengths.add_(T)
            else:
                self.lengths.copy_(cache_position[:, -1].expand(self.lengths.shape[0]) + 1)
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> torch.Tensor | int:
        """The longest row's length as a 0-d device tensor (like `StaticLayer`), 0 before the first forward."""
        return self.lengths.amax() if self.lengths is not None else 0

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.max_cache_len, 0

    def crop(self, tokens_to_remove: int) -> None:
        """Remove `-tokens_to_remove` tokens from the end of every row (transformers' `Cache.crop(-n)`)."""
        if tokens_to_remove > 0:
            raise ValueError("`crop` takes a negative number: the count of tokens to remove from the end.")
        if self.lengths is not None:
            self.lengths.sub_(-tokens_to_remove).clamp_(min=0)

    def reset(self) -> None:
        if self.lengths is not None:
            self.lengths.zero_()
