"""Batched speculative decoding of VQGPT image tokens: a draft proposes, the teacher verifies in one pass.

Each round: the draft samples `gamma` tokens one by one; the teacher scores all of them in a single forward;
`speculative_accept` (Leviathan et al. 2023, Algorithm 1) keeps a prefix per row and adds one token. Rows advance
by different amounts; both models keep a `RaggedCache` whose per-row lengths are moved back on rejection, so no
key/value is ever recomputed or copied.
"""

import time
from dataclasses import dataclass, field

import torch

from ..models import VQGPTForCausalLM
from .cache import RaggedCache, ragged_causal_mask, ragged_positions
from .sampling import (
    choose_gamma,
    greedy_accept,
    relaxed_accept,
    sample_categorical,
    speculative_accept,
    warp_logits,
)


@dataclass
class SpeculativeOutput:
    """Tokens and statistics of one `speculative_sample` call.

    sequences: `(B, prompt + new)` tokens, prompt included (like `generate()`).
    accepted_per_round / evaluated_per_round / proposed_per_round: `(rounds, B)` drafts inside the image that were
        accepted / tested (accepted ones plus the first rejected one) / drafted, per round.
    gamma_per_round: draft length used in each round.
    accepted_by_position / evaluated_by_position: `(new,)` counts per generated token position (for heat maps).
    teacher_forwards / draft_forwards: model calls made (prefill included).
    """

    sequences: torch.LongTensor
    accepted_per_round: torch.Tensor
    evaluated_per_round: torch.Tensor
    proposed_per_round: torch.Tensor
    gamma_per_round: list[int]
    accepted_by_position: torch.Tensor
    evaluated_by_position: torch.Tensor
    teacher_forwards: int
    draft_forwards: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_rounds(self) -> int:
        return len(self.gamma_per_round)

    @property
    def alpha(self) -> float:
        """Empirical acceptance probability per tested draft, accepted / tested: estimates `sum_x min(p, q)`."""
        return self.accepted_per_round.sum().item() / max(self.evaluated_per_round.sum().item(), 1)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (what transformers reports); below alpha, as drafts after a rejection are lost."""
        return self.accepted_per_round.sum().item() / max(self.proposed_per_round.sum().item(), 1)

    @property
    def acceptance_by_position(self) -> torch.Tensor:
        """Alpha per generated token position: accepted / tested there."""
        return self.accepted_by_position / self.evaluated_by_position.clamp(min=1)

    @property
    def tokens_per_teacher_call(self) -> float:
        """New tokens per row divided by verify rounds: the mean tokens each teacher call produced."""
        new_tokens = self.accepted_by_position.numel()
        return new_tokens / max(self.num_rounds, 1)


class EarlyExitDraft(torch.nn.Module):
    """Self-speculative draft: the teacher's first `num_layers` blocks, its final norm and its head.

    Shares every weight with the teacher; nothing to train. Pass it as `draft` to `speculative_sample`.
    """

    def __init__(self, teacher: VQGPTForCausalLM, num_layers: int):
        super().__init__()
        if not 1 <= num_layers < teacher.config.num_hidden_layers:
            raise ValueError(
                f"`num_layers` must be in [1, {teacher.config.num_hidden_layers - 1}], got {num_layers}."
            )
        self.teacher = teacher
        self.num_layers = num_layers
        self.config = teacher.config

    def forward(self, input_ids, **kwargs):
        return self.teacher(input_ids, num_layers=self.num_layers, **kwargs)

    def check_prompt(self, input_ids, max_new_tokens=None):
        self.teacher.check_prompt(input_ids, max_new_tokens)


def check_draft_matches(teacher, draft, argument: str = "draft") -> None:
    """Raise `ValueError` naming `argument` unless `draft` shares the teacher's codebook, classes and grid."""
    t, d = teacher.config, draft.config
    for name in ("codebook_size", "num_classes", "grid_h", "grid_w"):
        if getattr(t, name) != getattr(d, name):
            raise ValueError(
                f"`{argument}` does not match the teacher: {name} is {getattr(d, name)} in the draft and "
                f"{getattr(t, name)} in the teacher."
            )


def _check_arguments(
    teacher, draft, input_ids, gamma, max_new_tokens, do_sample, temperature, top_k, top_p, relaxed_neighbours
):
    t = teacher.config
    check_draft_matches(teacher, draft)
    if not isinstance(gamma, int) or gamma < 1:
        raise ValueError(f"`gamma` must be an integer >= 1, got {gamma!r}.")
    if do_sample and not temperature > 0:
        raise ValueError(f"`temperature` must be > 0 when sampling, got {temperature!r}.")
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"`top_k` must be a positive integer or None, got {top_k!r}.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must be in (0, 1] or None, got {top_p!r}.")
    if relaxed_neighbours is not None and (
        relaxed_neighbours.dim() != 2 or relaxed_neighbours.shape[0] != t.codebook_size
    ):
        raise ValueError(f"`relaxed_neighbours` must be a ({t.codebook_size}, k) table from `latent_neighbours`.")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be >= 1, got {max_new_tokens!r}.")
    teacher.check_prompt(input_ids, max_new_tokens)


@torch.inference_mode()
def speculative_sample(
    teacher: VQGPTForCausalLM,
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
) -> SpeculativeOutput:
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
    _check_arguments(
        teacher, draft, input_ids, gamma, max_new_tokens, do_sample, temperature, top_k, top_p, relaxed_neighbours
    )
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
    return SpeculativeOutput(
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
