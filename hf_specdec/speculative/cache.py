"""A preallocated transformers `Cache` whose rows have their own lengths.

In batched speculative decoding every row accepts a different number of drafted tokens, so after a round the rows'
caches hold different numbers of valid tokens. `RaggedCache` keeps one preallocated buffer `(B, heads, L, head_dim)`
per layer and a length per row: `update` writes each row's new keys/values at that row's own offset (no
`torch.cat`, no copy of the past), and rejecting drafted tokens is `crop_rows(n)`, which only moves lengths back.
The caller passes the matching mask (`ragged_causal_mask`) and positions (`ragged_positions`).
"""

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class RaggedLayer(CacheLayerMixin):
    """One layer's preallocated keys/values `(rows, heads, max_cache_len, head_dim)`. Lengths and write slots live in
    the owning `RaggedCache`: every layer holds the same tokens, so they are computed once per forward."""

    is_compileable = False
    is_sliding = False
    is_croppable = True

    def __init__(self, max_cache_len: int):
        super().__init__()
        self.max_cache_len = max_cache_len
        self.owner: "RaggedCache | None" = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        self.keys = key_states.new_zeros(B, H, self.max_cache_len, D)
        self.values = value_states.new_zeros(B, H, self.max_cache_len, value_states.shape[-1])
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, slots: torch.Tensor, *args, **kwargs):
        """Write `key_states`/`value_states` `(rows, H, T, D)` at per-row `slots` `(rows, T)`."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        index = slots[:, None, :, None]
        self.keys.scatter_(2, index.expand_as(key_states), key_states)
        self.values.scatter_(2, index.expand_as(value_states), value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.owner.get_seq_length() if self.owner is not None else 0

    def get_max_length(self) -> int:
        return self.max_cache_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.max_cache_len, 0

    def reset(self) -> None:
        pass  # lengths live in the cache


class RaggedCache(Cache):
    """`Cache` of `num_layers` `RaggedLayer`s holding up to `max_cache_len` tokens per row.

    One `(rows,)` length vector serves all layers: the write slots `lengths + [0, T)` are computed when layer 0 is
    updated and reused by the others, and the lengths advance by `T` before the next forward (or read). With
    classifier-free guidance the model stores `2B` rows (conditional, then unconditional); `crop_rows` with a `(B,)`
    tensor crops both halves alike.
    """

    def __init__(self, num_layers: int, max_cache_len: int):
        super().__init__(layers=[RaggedLayer(max_cache_len) for _ in range(num_layers)])
        self.max_cache_len = max_cache_len
        for layer in self.layers:
            layer.owner = self
        self.lengths: torch.Tensor | None = None
        self._slots: torch.Tensor | None = None  # (rows, T) write slots of the forward in progress
        self._pending = 0  # tokens written by that forward, added to `lengths` before the next one

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx == 0:
            self._advance()
            rows, _, T, _ = key_states.shape
            if self.lengths is None:
                self.lengths = torch.zeros(rows, dtype=torch.long, device=key_states.device)
            self._slots = self.lengths[:, None] + torch.arange(T, device=key_states.device)
            self._pending = T
        elif self._slots is None:
            raise RuntimeError("RaggedCache: layer 0 must be updated first in every forward.")
        return self.layers[layer_idx].update(key_states, value_states, self._slots)

    def _advance(self) -> None:
        if self._pending:
            self.lengths += self._pending
            self._pending = 0

    def row_lengths(self) -> torch.Tensor | None:
        """Valid tokens per stored row `(rows,)`, or None before the first update."""
        self._advance()
        return self.lengths

    def get_seq_length(self, layer_idx: int = 0) -> int:
        lengths = self.row_lengths()
        return int(lengths.max()) if lengths is not None else 0

    def crop_rows(self, tokens_to_remove: torch.Tensor) -> None:
        """Drop `tokens_to_remove[b]` tokens from the end of row `b` (a `(B,)` tensor of counts >= 0)."""
        lengths = self.row_lengths()
        if lengths is not None:
            repeats = lengths.shape[0] // tokens_to_remove.shape[0]
            counts = tokens_to_remove if repeats == 1 else tokens_to_remove.repeat(repeats)
            lengths.sub_(counts).clamp_(min=0)

    def crop(self, tokens_to_remove: int) -> None:
        """Remove `-tokens_to_remove` tokens from the end of every row (transformers' `Cache.crop(-n)`)."""
        if tokens_to_remove > 0:
            raise ValueError("`crop` takes a negative number: the count of tokens to remove from the end.")
        lengths = self.row_lengths()
        if lengths is not None:
            lengths.sub_(-tokens_to_remove).clamp_(min=0)

    def reset(self) -> None:
        self._pending = 0
        if self.lengths is not None:
            self.lengths.zero_()


def ragged_positions(start: torch.Tensor, length: int, max_position: int) -> torch.Tensor:
    """Positions `(B, length)` = `start[b] + i`, clamped to `max_position` (rows past the end only ride along)."""
    return (start[:, None] + torch.arange(length, device=start.device)).clamp(max=max_position)


def ragged_causal_mask(start: torch.Tensor, length: int, key_length: int) -> torch.Tensor:
    """Boolean mask `(B, 1, length, key_length)`: query `i` of row `b` sits at slot `start[b] + i` and sees slots
    `<= start[b] + i`; later (stale or empty) slots are hidden."""
    query_slots = start[:, None] + torch.arange(length, device=start.device)  # (B, T)
    key_slots = torch.arange(key_length, device=start.device)
    return (key_slots[None, None, :] <= query_slots[:, :, None]).unsqueeze(1)
