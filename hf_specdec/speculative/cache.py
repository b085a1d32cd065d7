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
    is_compileable = False
    is_sliding = False
    is_croppable = True

    def __init__(self, max_cache_len: int):
        super().__init__()
        self.max_cache_len = max_cache_len
        self.lengths: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        self.keys = key_states.new_zeros(B, H, self.max_cache_len, D)
        self.values = value_states.new_zeros(B, H, self.max_cache_len, value_states.shape[-1])
        self.lengths = torch.zeros(B, dtype=torch.long, device=key_states.device)
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        B, H, T, D = key_states.shape
        slots = self.lengths[:, None] + torch.arange(T, device=self.device)  # (B, T)
        index = slots[:, None, :, None].expand(B, H, T, D)
        self.keys.scatter_(2, index, key_states)
        self.values.scatter_(2, index, value_states)
        self.lengths += T
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return int(self.lengths.max()) if self.is_initialized else 0

    def get_max_length(self) -> int:
        return self.max_cache_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.max_cache_len, 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("`crop` takes a negative number: the count of tokens to remove from the end.")
        if self.is_initialized:
            self.lengths.sub_(-tokens_to_remove).clamp_(min=0)

    def crop_rows(self, tokens_to_remove: torch.Tensor) -> None:
        if self.is_initialized:
            self.lengths.sub_(tokens_to_remove.to(self.lengths)).clamp_(min=0)

    def reset(self) -> None:
        if self.is_initialized:
            self.lengths.zero_()


class RaggedCache(Cache):
    """`Cache` of `num_layers` `RaggedLayer`s holding up to `max_cache_len` tokens per row.

    With classifier-free guidance the model stores `2B` rows (conditional, then unconditional); `crop_rows` with a
    `(B,)` tensor crops both halves alike.
    """

    def __init__(self, num_layers: int, max_cache_len: int):
        super().__init__(layers=[RaggedLayer(max_cache_len) for _ in range(num_layers)])
        self.max_cache_len = max_cache_len

    def row_lengths(self) -> torch.Tensor | None:
        """Valid tokens per stored row `(rows,)`, or None before the first update."""
        return self.layers[0].lengths

    def crop_rows(self, tokens_to_remove: torch.Tensor) -> None:
        """Drop `tokens_to_remove[b]` tokens from the end of row `b` (a `(B,)` tensor of counts >= 0)."""
        for layer in self.layers:
            if layer.is_initialized:
                rows = layer.lengths.shape[0]
                layer.crop_rows(tokens_to_remove.repeat(rows // tokens_to_remove.shape[0]))


def ragged_positions(start: torch.Tensor, length: int, max_position: int) -> torch.Tensor:
    """Positions `(B, length)` = `start[b] + i`, clamped to `max_position` (rows past the end only ride along)."""
    return (start[:, None] + torch.arange(length, device=start.device)).clamp(max=max_position)


def ragged_causal_mask(start: torch.Tensor, length: int, key_length: int) -> torch.Tensor:
    """Boolean mask `(B, 1, length, key_length)`: query `i` of row `b` sits at slot `start[b] + i` and sees slots
    `<= start[b] + i`; later (stale or empty) slots are hidden."""
    query_slots = start[:, None] + torch.arange(length, device=start.device)  # (B, T)
    key_slots = torch.arange(key_length, device=start.device)
    return (key_slots[None, None, :] <= query_slots[:, :, None]).unsqueeze(1)
