"""The decoding loops as they were before the engine (commit c100c83), kept only so that benchmarks can measure the
engine against them in the same run. Not exported, not used by the library; delete once the engine's figures are
settled. Unchanged except for names, the dropped argument check and the statistics container.
"""

import time
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .sampling import choose_gamma, greedy_accept, relaxed_accept, sample_categorical, speculative_accept, warp_logits


@dataclass
class LegacyOutput:
    sequences: torch.LongTensor
    accepted_per_round: torch.Tensor
    evaluated_per_round: torch.Tensor
    proposed_per_round: torch.Tensor
    gamma_per_round: list
    accepted_by_position: torch.Tensor
    evaluated_by_position: torch.Tensor
    teacher_forwards: int
    draft_forwards: int
    timings: dict = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        return self.accepted_per_round.sum().item() / max(self.evaluated_per_round.sum().item(), 1)


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


@torch.inference_mode()
def legacy_speculative_sample(
    teacher,
    draft: torch.nn.Module,
    input_ids: torch.LongTensor,
    gamma: int = 4,
    max_new_tokens: int | None = None,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    generator: torch.Generator | None = None,
    adaptive_gamma: bool = False,
    cost_ratio: float | None = None,
    relaxed_neighbours: torch.Tensor | None = None,
) -> LegacyOutput:
    """Sample image tokens from `teacher` with `draft` proposing `gamma` tokens per round (Leviathan et al. 2023).

    Lossless: with `do_sample=True` the sequences are distributed exactly as `teacher.generate(input_ids,
    do_sample=True, temperature=..., top_k=..., top_p=..., cfg_scale=...)`; with `do_sample=False` they equal the
    teacher's greedy output token for token.

    Args:
        teacher: the `VQGPTForCausalLM` whose distribution is sampled.
        draft: a smaller `VQGPTForCausalLM` with the same codebook, classes and grid, or an `EarlyExitDraft`.
        input_ids: `(B, P)` prompts, `[class token, codes...]`, e.g. `teacher.class_prompt(labels)`. B >= 1.
        gamma: draft tokens per round (the maximum when `adaptive_gamma`).
        max_new_tokens: tokens to generate (default: the rest of the grid).
        temperature, top_k, top_p: applied identically to the teacher's `p` and the draft's `q`.
        cfg_scale: classifier-free guidance scale, applied inside both models.
        generator: a `torch.Generator` for reproducible sampling.
        adaptive_gamma: choose each round's gamma in `[1, gamma]` maximising the expected speedup
            `(1 - a^(g+1)) / ((1 - a)(g c + 1))` for the running acceptance `a` and cost ratio `c`.
        cost_ratio: `c` = draft step time / teacher step time; measured during the call when None.
        relaxed_neighbours: LOSSY, off by default. A `(K, k)` table from `latent_neighbours(codebook, k)`: accept
            a drafted code with the teacher's mass on its latent neighbours (`relaxed_accept`). Faster, but the
            output is no longer the teacher's distribution.
    """
    config = teacher.config
    device = input_ids.device
    B, P = input_ids.shape
    new_tokens = max_new_tokens if max_new_tokens is not None else config.max_position_embeddings - P
    total = P + new_tokens
    max_position = config.max_position_embeddings - 1
    slack = gamma + 2  # rows that are done keep riding along; their writes land beyond `total`
    buffer_length = total + slack
    sequences = torch.zeros(B, buffer_length, dtype=torch.long, device=device)
    sequences[:, :P] = input_ids
    n = torch.full((B,), P, dtype=torch.long, device=device)  # tokens so far, per row
    steps = torch.arange(gamma + 2, device=device)
    teacher_cache = RaggedCache(config.num_hidden_layers, buffer_length)
    draft_cache = RaggedCache(draft.num_layers, buffer_length)

    def forward(model, cache, tokens, mask, positions):
        out = model(
            tokens, cache=cache, attention_mask=mask, position_ids=positions, cfg_scale=cfg_scale, use_cache=True
        )
        return warp_logits(out.logits, temperature if do_sample else 1.0, top_k, top_p)

    def sample(logits):
        if not do_sample:
            return logits.argmax(-1), None
        probs = logits.softmax(-1)
        return sample_categorical(probs, generator), probs

    counts = {"teacher": 0, "draft": 0}
    timings = {"teacher": 0.0, "draft": 0.0}
    starts, accepted_rounds, gammas = [], [], []  # per round: n before it (B,), accepted drafts (B,), gamma

    if P > 1:  # prefill everything but the last prompt token
        zero = torch.zeros(B, dtype=torch.long, device=device)
        prefill = (ragged_causal_mask(zero, P - 1, buffer_length), ragged_positions(zero, P - 1, max_position))
        forward(teacher, teacher_cache, sequences[:, : P - 1], *prefill)
        forward(draft, draft_cache, sequences[:, : P - 1], *prefill)
        counts["teacher"] += 1
        counts["draft"] += 1
    # The draft's cache holds tokens [0, n - reread): it re-reads its last `reread` tokens at the start of a round
    # (1 in the first round, then 2: that covers both rows whose last draft was never fed and rows that rejected;
    # rewriting a slot with the same token is a no-op).
    reread = 1

    accepted_total, evaluated_total = 1.0, 2.0  # Beta(1, 1) prior for the running acceptance
    remaining_max = new_tokens  # one host sync per round: the most tokens any row still needs
    while remaining_max > 0:
        g = gamma
        if adaptive_gamma:
            c = cost_ratio
            if c is None:
                c = (timings["draft"] / max(counts["draft"], 1)) / max(timings["teacher"] / max(counts["teacher"], 1), 1e-9)
                c = c if counts["teacher"] > 0 else 0.1
            g = choose_gamma(accepted_total / evaluated_total, c, gamma)
        g = min(g, remaining_max - 1)

        # -- draft: g tokens, one at a time; the round's masks and positions are built once ----------------------
        tic = time.perf_counter()
        draft_start = n - reread
        span = reread + max(g - 1, 0)
        draft_mask = ragged_causal_mask(draft_start, span, buffer_length)
        draft_positions = ragged_positions(draft_start, span, max_position)
        tokens = sequences.gather(1, draft_start[:, None] + steps[:reread])
        draft_tokens, q = [], []
        for i in range(g):
            lo, hi = (0, reread) if i == 0 else (reread + i - 1, reread + i)
            logits = forward(draft, draft_cache, tokens, draft_mask[:, :, lo:hi], draft_positions[:, lo:hi])[:, -1]
            token, probs = sample(logits)
            draft_tokens.append(token)
            q.append(probs)
            tokens = token[:, None]
        counts["draft"] += g
        timings["draft"] += time.perf_counter() - tic

        # -- teacher: verify the last token and g drafts in one pass ----------------------------------------
        tic = time.perf_counter()
        drafted = torch.stack(draft_tokens, dim=1) if g > 0 else sequences.new_zeros(B, 0)
        verify = torch.cat([sequences.gather(1, (n - 1)[:, None]), drafted], dim=1)  # (B, g + 1)
        verify_start = n - 1
        p_logits = forward(teacher, teacher_cache, verify, ragged_causal_mask(verify_start, g + 1, buffer_length),
                           ragged_positions(verify_start, g + 1, max_position))  # (B, g + 1, K)
        counts["teacher"] += 1
        if do_sample:
            q_probs = torch.stack(q, dim=1) if g > 0 else p_logits.new_zeros(B, 0, p_logits.shape[-1])
            if relaxed_neighbours is None:
                accepted, next_token = speculative_accept(p_logits.softmax(-1), q_probs, drafted, generator)
            else:
                accepted, next_token = relaxed_accept(
                    p_logits.softmax(-1), q_probs, drafted, relaxed_neighbours, generator
                )
        else:
            accepted, next_token = greedy_accept(p_logits, drafted)
        timings["teacher"] += time.perf_counter() - tic

        # -- write the accepted prefix and the new token; rewind both caches -----------------------------------
        # Slots past a row's accepted prefix + 1 (and past `total`) get stale drafts: nothing reads them before
        # they are overwritten, and the buffer's slack keeps finished rows' writes out of the image.
        out_tokens = torch.cat([drafted, drafted.new_zeros(B, 1)], dim=1)
        out_tokens.scatter_(1, accepted[:, None], next_token[:, None])  # drafts up to the first rejection, then it
        sequences.scatter_(1, n[:, None] + steps[: g + 1], out_tokens)
        produced = torch.minimum(accepted + 1, total - n)  # rows near the end keep only what fits
        starts.append(n)
        accepted_rounds.append(accepted)
        gammas.append(g)
        teacher_cache.crop_rows(g + 1 - produced)  # teacher keeps tokens [0, n_new - 1)
        n = n + produced
        reread = 2
        draft_lengths = draft_cache.row_lengths()
        if draft_lengths is not None:  # it holds n_old + g - 1 >= n - 2 tokens (g = 0 only in a last round)
            draft_cache.crop_rows((draft_lengths[:B] - (n - reread)).clamp(min=0))
        if adaptive_gamma:  # the running alpha: accepted / tested drafts inside the image
            tested = torch.minimum(torch.minimum(accepted + 1, total - starts[-1]), torch.full_like(accepted, g))
            sums = torch.stack([torch.minimum(accepted, tested).sum(), tested.sum(), (total - n).max()]).tolist()
            accepted_total += sums[0]
            evaluated_total += sums[1]
            remaining_max = int(sums[2])
        else:
            remaining_max = int((total - n).max())

    # -- statistics, once for all rounds -----------------------------------------------------------------------
    R = len(gammas)
    G = max(gammas, default=0)
    offsets = torch.arange(G, device=device)
    if R > 0:
        n_before = torch.stack(starts)  # (R, B)
        accepted_all = torch.stack(accepted_rounds)  # (R, B)
        g_all = torch.tensor(gammas, device=device)[:, None]  # (R, 1)
        in_image = offsets < torch.minimum(total - n_before, g_all)[..., None]  # (R, B, G)
        was_accepted = (offsets < accepted_all[..., None]) & in_image
        was_tested = (offsets <= accepted_all[..., None]) & in_image
        slots = (n_before[..., None] + offsets).clamp(max=buffer_length - 1)
        accepted_by_position = torch.zeros(buffer_length, device=device).index_put_(
            (slots[in_image],), was_accepted[in_image].float(), accumulate=True)
        evaluated_by_position = torch.zeros(buffer_length, device=device).index_put_(
            (slots[in_image],), was_tested[in_image].float(), accumulate=True)
        accepted_per_round, evaluated_per_round = was_accepted.sum(-1), was_tested.sum(-1)
        proposed_per_round = in_image.sum(-1)
    else:
        accepted_by_position = evaluated_by_position = torch.zeros(buffer_length, device=device)
        accepted_per_round = evaluated_per_round = proposed_per_round = torch.zeros(0, B)

    positions = slice(P, total)
    return LegacyOutput(
        sequences=sequences[:, :total],
        accepted_per_round=accepted_per_round,
        evaluated_per_round=evaluated_per_round,
        proposed_per_round=proposed_per_round,
        gamma_per_round=gammas,
        accepted_by_position=accepted_by_position[positions].cpu(),
        evaluated_by_position=evaluated_by_position[positions].cpu(),
        teacher_forwards=counts["teacher"],
        draft_forwards=counts["draft"],
        timings=timings,
    )


@torch.inference_mode()
def legacy_plain_sample(
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
