"""Pure functions of speculative sampling, with the papers' names.

Leviathan, Kalman & Matias 2023, "Fast Inference from Transformers via Speculative Decoding" (Algorithm 1), and
Chen et al. 2023, "Accelerating Large Language Model Decoding with Speculative Sampling": a drafted token `x ~ q`
is accepted with probability `min(1, p(x) / q(x))`; at the first rejection the token is resampled from
`norm(max(0, p - q))`; if all `gamma` drafts pass, one more token comes from the teacher's `p` at no extra call.
The output is distributed exactly as `p`, and the expected acceptance per token is `alpha = sum_x min(p, q)`
`= 1 - TV(p, q)`.
"""

from dataclasses import dataclass

import torch

from ..models.configuration_vqgpt import _is_finite_number as _is_number, _is_int
from ..models.modeling_vqgpt import check_cfg_scale

MIN_TEMPERATURE = torch.finfo(torch.float32).tiny  # smaller ones are 0 in float32


def warp_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering, in transformers' order and tie rules.

    `logits` `(..., K)` -> filtered logits (removed entries are -inf). Used for both `p` and `q`, so that the
    draft and the teacher are compared on the distributions that are actually sampled.
    """
    logits = logits.float()
    if temperature < 1e-3:  # minus the max, never above 0: a tiny temperature cannot overflow to inf - inf = NaN
        logits = (logits - logits.amax(-1, keepdim=True)) / temperature  # (the same distribution, other raw values)
    elif temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = False  # keep at least the most likely token
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_categorical(
    weights: torch.Tensor, generator: torch.Generator | None = None, exponentials: torch.Tensor | None = None
) -> torch.Tensor:
    """One index per row of `weights` `(..., K)` (>= 0, need not be normalised), drawn with probability
    `weights / weights.sum(-1)`, by the exponential race `argmax_i w_i / E_i` with `E_i ~ Exp(1)` (the algorithm
    `torch.multinomial` runs for one sample): no normalisation, no validation pass, no host sync. Returns `(...)`.

    `exponentials` (same shape) supplies the `E_i` (e.g. `exponential_from_uniform` of noise drawn before a
    captured round); otherwise they are drawn from `generator`. Weights must be finite and small enough that
    `w / E` does not overflow (probabilities, as the samplers pass, or anything below ~1e30): past that, ties at
    infinity go to the first index."""
    if exponentials is None:
        exponentials = torch.empty_like(weights, dtype=torch.float32).exponential_(generator=generator)
    return (weights / exponentials.clamp(min=1e-30)).argmax(dim=-1)


def exponential_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """`Exp(1)` draws from `U[0, 1)` draws by inversion, `-log(u)` (1 - u is uniform too). Not `-log(1 - u)`: float32
    uniforms are 0 with probability 2**-24, which gave E = 0, a certain win of the race whatever the code's weight
    (about K * 2**-24 of every token a uniform pick among the codes with p > 0: TV 1e-3 per token at K = 16,384).
    Here u = 0 gives E = inf, a loss, where a true exponential would be past 16 anyway."""
    return -torch.log(u)


def speculative_accept(
    p: torch.Tensor,
    q: torch.Tensor,
    draft_tokens: torch.Tensor,
    generator: torch.Generator | None = None,
    r: torch.Tensor | None = None,
    exponentials: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's acceptance step for a batch.

    Args:
        p: teacher probabilities `(B, gamma + 1, K)` at the `gamma` drafted positions and the one after.
        q: draft probabilities `(B, gamma, K)` from which `draft_tokens` `(B, gamma)` were sampled.
        r: `(B, gamma)` draws from `U[0, 1)` (drawn from `generator` when None).
        exponentials: `(B, K)` `Exp(1)` draws for the token after the accepted prefix (from `generator` when None).
    Returns:
        n: accepted drafts per row `(B,)`, in `[0, gamma]`, the first rejection found on the device;
        next_token: `(B,)` sampled from `norm(max(0, p_n - q_n))` where a draft was rejected, from `p_gamma`
            where all were accepted.
    """
    B, gamma = draft_tokens.shape
    p_draft = p[:, :gamma].gather(-1, draft_tokens[..., None]).squeeze(-1)  # p(x_i), (B, gamma)
    q_draft = q.gather(-1, draft_tokens[..., None]).squeeze(-1)  # q(x_i)
    if r is None:
        r = torch.rand(B, gamma, device=p.device, generator=generator, dtype=torch.float32)
    accepted = r * q_draft < p_draft  # r < p/q without dividing by q
    n = accepted.long().cumprod(dim=1).sum(dim=1)  # leading run of acceptances
    return n, sample_residual(p, q, n, generator, exponentials)


def sample_residual(
    p: torch.Tensor,
    q: torch.Tensor,
    n: torch.Tensor,
    generator: torch.Generator | None = None,
    exponentials: torch.Tensor | None = None,
) -> torch.Tensor:
    """The token after `n` accepted drafts, per row: from `norm(max(0, p_n - q_n))` where draft `n` was rejected,
    from `p_gamma` where all `gamma` were accepted (`q` counts as 0 there). `p` `(B, gamma + 1, K)`, `q`
    `(B, gamma, K)`, `n` `(B,)` -> `(B,)`."""
    B, gamma, K = q.shape
    q_next = torch.cat([q, q.new_zeros(B, 1, K)], dim=1)
    rows = torch.arange(B, device=p.device)
    p_n = p[rows, n]
    residual = (p_n - q_next[rows, n]).clamp(min=0)  # (B, K), unnormalised: sample_categorical needs no sum
    # p_n == q_n exactly leaves no residual mass; rejection then has probability 0, so any choice is exact.
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_n)
    return sample_categorical(residual, generator, exponentials)


def block_accept(
    p: torch.Tensor,
    q: torch.Tensor,
    draft_tokens: torch.Tensor,
    generator: torch.Generator | None = None,
    eta: torch.Tensor | None = None,
    exponentials: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block verification (Sun et al. 2025, "Block Verification Accelerates Speculative Decoding", Algorithm 2):
    the whole draft block is verified jointly. Lossless like `speculative_accept`, never accepts fewer tokens in
    expectation, and is optimal among rules that see only the drafted path's probabilities.

    With `M_b = p`, `M_s = q` and `X_i` the drafts, for i = 1..gamma:
        p_i = min(p_{i-1} M_b(X_i | X^{i-1}) / M_s(X_i | X^{i-1}), 1),  p_0 = 1
        h_i = r_i / (r_i + 1 - p_i),  r_i = sum_x max(p_i M_b(x | X^i) - M_s(x | X^i), 0)   (i < gamma),  h_gamma = p_gamma
    tau = the largest i with eta_i < h_i (0 if none); the next token comes from `M_b(. | X^gamma)` if tau = gamma,
    else from `norm(max(p_tau M_b(. | X^tau) - M_s(. | X^tau), 0))`.

    Shapes as in `speculative_accept`; `eta` `(B, gamma)` are the `U[0, 1)` draws. Returns `(tau (B,), next_token (B,))`.

    `lengths` `(B,)` (default: gamma for every row): each row's block is its first `lengths[b]` drafts, verified as a
    block of that length (the same `tau` and next token as a call on those drafts alone, with the same draws). The
    drafts after them, and their `p` and `q`, are never read: in a fixed-shape round a row near the end of its
    sequence drafts past it, and the teacher's `p` there is no conditional of the drafted prefix (the slots past the
    end share one cache slot), which block verification's weights for the earlier drafts would otherwise read.
    """
    B, gamma = draft_tokens.shape
    p_block, h = block_weights(p, q, draft_tokens, lengths)
    if eta is None:
        eta = torch.rand(B, gamma, device=p.device, generator=generator, dtype=torch.float32)
    steps = torch.arange(1, gamma + 1, device=p.device)
    # the last i that passes; strictly, so that h_i = 0 (after a row's block, or r_i = 0) never passes a float eta = 0
    tau = torch.where(eta < h, steps, torch.zeros_like(steps)).amax(dim=1)
    return tau, sample_block_residual(p, q, p_block, tau, generator, exponentials, lengths)


def block_weights(
    p: torch.Tensor, q: torch.Tensor, draft_tokens: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`p_i` and `h_i` of block verification (`block_accept`), both `(B, gamma)` for i = 1..gamma. With `lengths`,
    row b's block ends at `m = lengths[b]`: `h_m = p_m` (its last weight), `h_i = 0` after it, and nothing after
    `p[:, m - 1]`, `q[:, m - 1]` is read."""
    B, gamma = draft_tokens.shape
    p_x = p[:, :gamma].gather(-1, draft_tokens[..., None]).squeeze(-1)  # M_b(X_i | X^{i-1}), (B, gamma)
    q_x = q.gather(-1, draft_tokens[..., None]).squeeze(-1).clamp(min=1e-30)  # drafts have q > 0
    if lengths is not None:
        steps = torch.arange(1, gamma + 1, device=p.device)
        inside = steps <= lengths[:, None]  # (B, gamma): draft i is in row b's block
        p_x = torch.where(inside, p_x, q_x)  # a ratio of 1 after the block: p_i stays p_m, read at i = m only
    # p_i = min(p_{i-1} p_x / q_x, 1) without a loop: log p_i = S_i - max(0, S_1, ..., S_i), S the cumulative log-ratio
    S = (p_x.log() - q_x.log()).cumsum(dim=1)
    peak = torch.cummax(torch.cat([S.new_zeros(B, 1), S], dim=1), dim=1).values[:, 1:]
    p_block = torch.exp(S - peak)
    residual_mass = (p_block[:, :-1, None] * p[:, 1:gamma] - q[:, 1:gamma]).clamp(min=0).sum(-1)  # r_1..r_{gamma-1}
    denominator = residual_mass + 1 - p_block[:, :-1]
    h = torch.where(denominator > 0, residual_mass / denominator.clamp(min=1e-30), torch.zeros_like(denominator))
    h = torch.cat([h, p_block[:, -1:]], dim=1)
    if lengths is not None:  # the block's last weight at i = m; the h_i that read p and q after it never count
        h = torch.where(steps == lengths[:, None], p_block, torch.where(inside, h, torch.zeros_like(h)))
    return p_block, h


def sample_block_residual(
    p: torch.Tensor,
    q: torch.Tensor,
    p_block: torch.Tensor,
    tau: torch.Tensor,
    generator: torch.Generator | None = None,
    exponentials: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """The token after a block-verified prefix of `tau` drafts: from `M_b(. | X^gamma)` if all were kept, else from
    `norm(max(p_tau M_b(. | X^tau) - M_s(. | X^tau), 0))` (`p_0 = 1`). Returns `(B,)`. With `lengths`, a row's
    block ends at `lengths[b]` drafts instead of gamma."""
    B = tau.shape[0]
    rows = torch.arange(B, device=p.device)
    p_tau = torch.cat([p_block.new_ones(B, 1), p_block], dim=1)[rows, tau]
    q_next = torch.cat([q, q.new_zeros(B, 1, q.shape[-1])], dim=1)[rows, tau]
    end = tau == (lengths if lengths is not None else q.shape[1])
    q_next = torch.where(end[:, None], torch.zeros_like(q_next), q_next)  # M_s counts as 0 after the block
    p_next = p[rows, tau]
    residual = (p_tau[:, None] * p_next - q_next).clamp(min=0)  # unnormalised
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_next)  # empty only with probability 0
    return sample_categorical(residual, generator, exponentials)


def greedy_accept(p_logits: torch.Tensor, draft_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification: accept while the draft's token is the teacher's argmax; then take the teacher's argmax.

    `p_logits` `(B, gamma + 1, K)`, `draft_tokens` `(B, gamma)` -> `(n (B,), next_token (B,))`.
    """
    gamma = draft_tokens.shape[1]
    targets = p_logits.argmax(dim=-1)  # (B, gamma + 1)
    n = (draft_tokens == targets[:, :gamma]).long().cumprod(dim=1).sum(dim=1)
    return n, targets.gather(1, n[:, None]).squeeze(1)


def expected_tokens(alpha: float, gamma: int) -> float:
    """Leviathan et al. eq. (1): expected tokens per round, `(1 - alpha^(gamma+1)) / (1 - alpha)`."""
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def expected_speedup(alpha: float, gamma: int, c: float) -> float:
    """Leviathan et al. eq. (1) over eq. for cost: `(1 - alpha^(gamma+1)) / ((1 - alpha) (gamma c + 1))`."""
    return expected_tokens(min(max(alpha, 0.0), 1.0 - 1e-9), gamma) / (gamma * c + 1)


def round_counts(starts: torch.Tensor, accepted: torch.Tensor, gamma: int, total: int):
    """Per round and row, drafts inside the image that were accepted / tested (the accepted ones plus the first
    rejected one), for rounds of one `gamma`: the counts behind adaptive gamma's running alpha (`choose_gamma`)."""
    in_image = torch.clamp(total - starts, min=0).clamp(max=gamma)
    tested = torch.minimum(accepted + 1, in_image)
    return torch.minimum(accepted, tested), tested


def choose_gamma(alpha: float, c: float, gamma_max: int) -> int:
    """The draft length in `[1, gamma_max]` that maximises `expected_speedup(alpha, gamma, c)`."""
    return max(range(1, gamma_max + 1), key=lambda gamma: expected_speedup(alpha, gamma, c))


def acceptance_alpha(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Expected acceptance `sum_x min(p(x), q(x))` per position (`p`, `q` probabilities `(..., K)`)."""
    return torch.minimum(p, q).sum(dim=-1)


def latent_neighbours(codebook: torch.Tensor, k: int, max_distance: float | None = None) -> torch.Tensor:
    """For each code, the indices `(K, k)` of its `k` nearest codebook vectors (itself first) in latent space.

    `codebook` `(K, D)`, e.g. `tokenizer.quantize.embedding.weight`. Neighbours farther than `max_distance` are
    replaced by the code itself, which bounds how far a relaxed acceptance can move the distribution.
    """
    if not isinstance(codebook, torch.Tensor) or codebook.dim() != 2 or not codebook.is_floating_point():
        raise ValueError("`codebook` must be a floating-point (K, D) tensor of code vectors, e.g. "
                         f"`tokenizer.quantize.embedding.weight`; got {getattr(codebook, 'shape', type(codebook).__name__)}.")
    if not _is_int(k) or not 1 <= k <= codebook.shape[0]:
        raise ValueError(f"`k` must be an integer in [1, {codebook.shape[0]}], got {k!r}.")
    if max_distance is not None and not (_is_number(max_distance) and max_distance >= 0):
        raise ValueError(f"`max_distance` must be a finite number >= 0 or None, got {max_distance!r}.")
    distances = torch.cdist(codebook.float(), codebook.float())
    distances.fill_diagonal_(-1.0)  # itself first, whatever the rounding
    nearest = distances.topk(k, largest=False)
    neighbours = nearest.indices
    if max_distance is not None:
        too_far = nearest.values > max_distance
        neighbours = torch.where(too_far, neighbours[:, :1].expand_as(neighbours), neighbours)
    return neighbours


def relaxed_accept(
    p: torch.Tensor,
    q: torch.Tensor,
    draft_tokens: torch.Tensor,
    neighbours: torch.Tensor,
    generator: torch.Generator | None = None,
    r: torch.Tensor | None = None,
    exponentials: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LOSSY relaxed acceptance in the spirit of LANTERN (Jang et al. 2024): a drafted code `x` is accepted with
    probability `min(1, p(N(x)) / q(x))`, where `p(N(x))` is the teacher's mass on `x`'s latent neighbours
    `neighbours[x]` (with duplicates counted once); at the first rejection the token comes from
    `norm(max(0, p - q))` as in the exact algorithm.

    Images that look alike in latent space are accepted more often; the output is *not* distributed as `p`. With
    `neighbours[x] == [x]` this is exactly `speculative_accept`. Shapes and noise as in `speculative_accept`.
    """
    B, gamma = draft_tokens.shape
    K = p.shape[-1]
    member = torch.zeros(K, K, dtype=p.dtype, device=p.device)
    member.scatter_(1, neighbours.to(p.device), 1.0)  # member[x, y] = 1 if y is a neighbour of x
    p_neighbourhood = (p[:, :gamma] * member[draft_tokens]).sum(-1)  # p(N(x_i)), (B, gamma)
    q_draft = q.gather(-1, draft_tokens[..., None]).squeeze(-1)
    if r is None:
        r = torch.rand(B, gamma, device=p.device, generator=generator, dtype=torch.float32)
    n = (r * q_draft < p_neighbourhood).long().cumprod(dim=1).sum(dim=1)
    return n, sample_residual(p, q, n, generator, exponentials)


def multi_draft_accept(
    p: torch.Tensor,
    q: torch.Tensor,
    draft_tokens: torch.Tensor,
    generator: torch.Generator | None = None,
    r: torch.Tensor | None = None,
    exponentials: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-draft verification of `k` independent draft chains per row: SpecInfer's multi-step speculative
    sampling (Miao et al. 2024, Algorithm 2), i.e. recursive rejection sampling at every depth of the chains.

    At depth `i` the candidates are the `i`-th tokens of the chains still *alive* (those whose earlier tokens are
    the accepted ones; all `k` at depth 1). Given the same prefix, they are i.i.d. draws from `q`. They are tested
    in chain order against a residual that starts at `p` and shrinks after each rejection:

        accept x_j with probability min(1, r(x_j) / q(x_j)),  then on rejection  r <- norm(max(0, r - q))

    The first accepted candidate becomes the next token and its chain the context of the next depth; if all alive
    candidates are rejected, the next token is drawn from the last residual `r`; if a chain survives all `gamma`
    depths, one more token comes from its `p`. The output is distributed exactly as `p` (the paper's Theorem 4.2);
    with `k = 1` this is `speculative_accept`.

    Args:
        p: teacher probabilities `(B, k, gamma + 1, K)` along each chain.
        q: draft probabilities `(B, k, gamma, K)` from which `draft_tokens` `(B, k, gamma)` were sampled.
        r: `(B, k, gamma)` draws from `U[0, 1)` (from `generator` when None).
        exponentials: `(B, K)` `Exp(1)` draws for the token after the accepted prefix (from `generator` when None).
        candidates: `(k, gamma)` booleans, which chains' tokens are candidates at each depth (default: all). A token
            tree runs as chains that share their first tokens (one chain per leaf); only one chain per tree node,
            holding that node's draw, is a candidate, so the candidates stay i.i.d. draws from `q`.
    Returns:
        n: accepted drafts per row `(B,)`; chain: `(B,)` a chain that holds them (its first `n` tokens);
        next_token: `(B,)`.
    """
    B, k, gamma = draft_tokens.shape
    if r is None:
        r = torch.rand(B, k, gamma, device=p.device, generator=generator)
    rows = torch.arange(B, device=p.device)
    alive = torch.ones(B, k, dtype=torch.bool, device=p.device)
    running = torch.ones(B, dtype=torch.bool, device=p.device)  # no rejection of every candidate yet
    chain = torch.zeros(B, dtype=torch.long, device=p.device)
    n = torch.zeros(B, dtype=torch.long, device=p.device)
    final = p[rows, chain, gamma]  # the distribution of the token after the accepted prefix, per row
    for i in range(gamma):
        residual = p[rows, chain, i]  # unnormalised r, (B, K); same context for every alive chain
        q_i = q[rows, chain, i]
        found = torch.zeros(B, dtype=torch.bool, device=p.device)
        token = torch.zeros(B, dtype=torch.long, device=p.device)
        new_chain = chain
        for j in range(k):
            x = draft_tokens[:, j, i]
            mass = residual.sum(-1)
            r_x = residual.gather(1, x[:, None]).squeeze(1)
            q_x = q_i.gather(1, x[:, None]).squeeze(1)
            tested = alive[:, j] & ~found
            if candidates is not None:
                tested = tested & candidates[j, i]
            accepted = tested & (r[:, j, i] * q_x * mass < r_x)  # u < r(x) / q(x) with r = residual / mass
            token = torch.where(accepted, x, token)
            new_chain = torch.where(accepted, j, new_chain)
            found = found | accepted
            rejected = tested & ~accepted
            shrunk = (residual / mass.clamp(min=1e-30)[:, None] - q_i).clamp(min=0)
            # An empty residual is reached with probability 0 (r = q rejects nothing); keep r then.
            shrunk = torch.where(shrunk.sum(-1, keepdim=True) > 0, shrunk, residual)
            residual = torch.where(rejected[:, None], shrunk, residual)
        stops = running & ~found  # every alive candidate rejected at this depth: the token comes from r
        final = torch.where(stops[:, None], residual, final)
        running = running & found
        n = n + running.long()
        chain = torch.where(running, new_chain, chain)
        alive = alive & (draft_tokens[:, :, i] == token[:, None]) & running[:, None]
    final = torch.where(running[:, None], p[rows, chain, gamma], final)
    return n, chain, sample_categorical(final, generator, exponentials)


VERIFICATIONS = ("token", "block")


@dataclass(frozen=True)
class SamplingConfig:
    """How `p` and `q` are processed, drawn and verified: the same for the teacher and the draft. Part of a
    decoder's identity (another setting means another compiled round). Bad values raise `ValueError` naming them.

    do_sample: sample (True) or take the argmax (False, greedy; verification is then argmax agreement).
    temperature, top_k, top_p: applied by `warp_logits`, in transformers' order.
    cfg_scale: classifier-free guidance scale inside the models (None or 1 = off).
    verification: `token` (Leviathan et al., `speculative_accept`) or `block` (Sun et al., `block_accept`).
    num_drafts: draft candidates per tree node, verified together (`multi_draft_accept`, SpecInfer's multi-step
        speculative sampling); 1 = one chain. Needs `verification='token'`.
    tree_depth: the draft positions at which the candidates branch: `num_drafts ** tree_depth` chains per row
        (a token tree); 1 = `num_drafts` independent chains (candidates at a round's first position only).
    """

    do_sample: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float | None = None
    verification: str = "token"
    num_drafts: int = 1
    tree_depth: int = 1

    def __post_init__(self):
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"`do_sample` must be True or False, got {self.do_sample!r}.")
        if not (_is_number(self.temperature) and self.temperature >= MIN_TEMPERATURE):
            raise ValueError(f"`temperature` must be a finite number >= {MIN_TEMPERATURE:.3g} (the least normal float32;"
                             f" for greedy decoding pass do_sample=False), got {self.temperature!r}.")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            raise ValueError(f"`top_k` must be a positive integer or None, got {self.top_k!r}.")
        if self.top_p is not None and not (_is_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"`top_p` must be in (0, 1] or None, got {self.top_p!r}.")
        check_cfg_scale(self.cfg_scale)
        if self.verification not in VERIFICATIONS:
            raise ValueError(f"`verification` must be one of {', '.join(VERIFICATIONS)}, got {self.verification!r}.")
        if not _is_int(self.num_drafts) or not 1 <= self.num_drafts <= 16:
            raise ValueError(f"`num_drafts` must be an integer in [1, 16], got {self.num_drafts!r}.")
        if not _is_int(self.tree_depth) or self.tree_depth < 1 or self.num_drafts**self.tree_depth > 64:
            raise ValueError(f"`tree_depth` must be an integer >= 1 with `num_drafts ** tree_depth` <= 64 chains, got "
                             f"{self.tree_depth!r} (num_drafts {self.num_drafts}).")
        if self.tree_depth > 1 and self.num_drafts == 1:  # 1 ** depth = one chain: no tree, silently
            raise ValueError(f"`tree_depth` {self.tree_depth} branches among `num_drafts` candidates: it needs "
                             "`num_drafts` >= 2 (got 1).")
        if self.num_drafts > 1 and self.verification != "token":
            raise ValueError(f"`num_drafts` > 1 needs `verification='token'` (multi-draft recursive rejection), got "
                             f"{self.verification!r}.")

    @property
    def guided(self) -> bool:
        return self.cfg_scale is not None and self.cfg_scale != 1.0

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        return warp_logits(logits, self.temperature if self.do_sample else 1.0, self.top_k, self.top_p)
