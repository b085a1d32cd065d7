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
from .sampling import choose_gamma, greedy_accept, relaxed_accept, speculative_accept, warp_logits


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
    rows = torch.arange(B, device=device)
    teacher_cache = RaggedCache(config.num_hidden_layers, buffer_length)
    draft_cache = RaggedCache(getattr(draft, "num_layers", None) or draft.config.num_hidden_layers, buffer_length)

    def forward(model, cache, tokens, start):
        T = tokens.shape[1]
        out = model(
            tokens,
            cache=cache,
            attention_mask=ragged_causal_mask(start, T, buffer_length),
            position_ids=ragged_positions(start, T, max_position),
            cfg_scale=cfg_scale,
            use_cache=True,
        )
        return warp_logits(out.logits, temperature if do_sample else 1.0, top_k, top_p)

    def sample(logits):
        if not do_sample:
            return logits.argmax(-1), None
        probs = logits.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1), probs

    counts = {"teacher": 0, "draft": 0}
    timings = {"teacher": 0.0, "draft": 0.0}
    accepted_rounds, evaluated_rounds, proposed_rounds, gammas = [], [], [], []
    accepted_by_position = torch.zeros(buffer_length, device=device)
    evaluated_by_position = torch.zeros(buffer_length, device=device)

    if P > 1:  # prefill everything but the last prompt token
        zero = torch.zeros(B, dtype=torch.long, device=device)
        forward(teacher, teacher_cache, sequences[:, : P - 1], zero)
        forward(draft, draft_cache, sequences[:, : P - 1], zero)
        counts["teacher"] += 1
        counts["draft"] += 1
    draft_start = n - 1  # the draft's cache holds tokens [0, draft_start)

    accepted_total, evaluated_total = 1.0, 2.0  # Beta(1, 1) prior for the running acceptance
    while bool((n < total).any()):
        remaining = total - n  # (B,), 0 for finished rows
        g = gamma
        if adaptive_gamma:
            c = cost_ratio
            if c is None:
                c = (timings["draft"] / max(counts["draft"], 1)) / max(timings["teacher"] / max(counts["teacher"], 1), 1e-9)
                c = c if counts["teacher"] > 0 else 0.1
            g = choose_gamma(accepted_total / evaluated_total, c, gamma)
        g = min(g, int(remaining.max()) - 1)

        # -- draft: g tokens, one at a time ------------------------------------------------------------------
        tic = time.perf_counter()
        draft_tokens, q = [], []
        tokens = sequences[rows[:, None], draft_start[:, None] + torch.arange(int((n - draft_start).max()), device=device)]
        start = draft_start
        for _ in range(g):
            logits = forward(draft, draft_cache, tokens, start)[:, -1]
            token, probs = sample(logits)
            draft_tokens.append(token)
            q.append(probs)
            start = start + tokens.shape[1]
            tokens = token[:, None]
        counts["draft"] += g
        timings["draft"] += time.perf_counter() - tic

        # -- teacher: verify the last token and g drafts in one pass ----------------------------------------
        tic = time.perf_counter()
        drafted = torch.stack(draft_tokens, dim=1) if g > 0 else sequences.new_zeros(B, 0)
        verify = torch.cat([sequences[rows, n - 1][:, None], drafted], dim=1)  # (B, g + 1)
        p_logits = forward(teacher, teacher_cache, verify, n - 1)  # (B, g + 1, K)
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

        # -- keep the accepted prefix and the new token; rewind both caches -----------------------------------
        offsets = torch.arange(g + 1, device=device)
        out_tokens = torch.where(offsets < accepted[:, None], torch.cat([drafted, next_token[:, None]], dim=1), next_token[:, None])
        produced = torch.minimum(accepted + 1, remaining)  # rows near the end keep only what fits
        slots = n[:, None] + offsets
        keep = offsets[None, :] < produced[:, None]
        sequences.scatter_(1, slots, torch.where(keep, out_tokens, sequences.gather(1, slots)))

        in_image = offsets[None, :g] < torch.minimum(remaining, torch.full_like(remaining, g))[:, None]
        was_accepted = (offsets[None, :g] < accepted[:, None]) & in_image
        was_tested = (offsets[None, :g] <= accepted[:, None]) & in_image
        accepted_rounds.append(was_accepted.sum(1))
        evaluated_rounds.append(was_tested.sum(1))
        proposed_rounds.append(in_image.sum(1))
        gammas.append(g)
        accepted_by_position.scatter_add_(0, slots[:, :g].flatten(), was_accepted.flatten().float())
        evaluated_by_position.scatter_add_(0, slots[:, :g].flatten(), was_tested.flatten().float())
        if adaptive_gamma:  # host syncs only when the running alpha is used
            accepted_total += accepted_rounds[-1].sum().item()
            evaluated_total += evaluated_rounds[-1].sum().item()

        teacher_cache.crop_rows(g + 1 - produced)  # teacher keeps tokens [0, n_new - 1)
        n = n + produced
        # The draft re-reads its last two tokens next round: a rewrite of the same slot with the same token is a
        # no-op, and it covers both rows whose last draft was never fed (all accepted) and rows that rejected.
        draft_lengths = draft_cache.row_lengths()
        if draft_lengths is not None:
            target = (n - 2).clamp(min=0)
            draft_cache.crop_rows((draft_lengths[:B] - target).clamp(min=0))
            draft_start = torch.minimum(draft_lengths[:B], target)

    positions = slice(P, total)
    return SpeculativeOutput(
        sequences=sequences[:, :total],
        accepted_per_round=torch.stack(accepted_rounds) if accepted_rounds else torch.zeros(0, B),
        evaluated_per_round=torch.stack(evaluated_rounds) if evaluated_rounds else torch.zeros(0, B),
        proposed_per_round=torch.stack(proposed_rounds) if proposed_rounds else torch.zeros(0, B),
        gamma_per_round=gammas,
        accepted_by_position=accepted_by_position[positions].cpu(),
        evaluated_by_position=evaluated_by_position[positions].cpu(),
        teacher_forwards=counts["teacher"],
        draft_forwards=counts["draft"],
        timings=timings,
    )
