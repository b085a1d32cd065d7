"""The decoding engine: Algorithm 1 as a fixed-shape round with no host synchronisation, replayed as a CUDA graph.

One round, for every row of the batch at once (Leviathan et al. 2023, Algorithm 1):

    draft   gamma tokens from the draft, one `(B, 1)` step at a time (the first step re-reads 2 tokens)
    verify  one teacher pass over `(B, gamma + 1)` tokens
    accept  per row, the accepted prefix `n` and one more token, decided on the device
    commit  write the tokens and move each row's length; rejected slots are simply overwritten later

With `SamplingConfig(num_drafts=k)` every row drafts `k` independent chains (`k` rows of the caches and buffers,
chain-major inside each row), the teacher verifies all of them in the same pass, `multi_draft_accept` picks the
accepted prefix (SpecInfer's multi-step speculative sampling), and commit copies the winning chain's tokens and its
key/value slots of the round into the other chains of the row: a fixed-shape copy of `gamma + 3` slots per layer.
With `tree_depth=m` the `k ** m` chains form a token tree: at its first `m` positions the chains of one node draw
with the same noise (the same token) and only the node's first chain is a candidate.

A feature-conditioned draft (`VQGPTFeatureDraft`, EAGLE-3 style) reads the teacher: the verify pass also returns
the teacher's hidden states, fused into one feature per slot and kept in a buffer, and the draft's first step of a
round is a fixed `(B, gamma_max + 1)` catch-up pass over the slots committed since its last round (teacher feature of
the slot before + token), whose output at the last committed slot gives the first draft; later steps feed the draft's
own hidden state in place of the teacher's feature. No extra teacher forward, fixed shapes, no host read.

Plain decoding is the same round with `gamma = 0` (verify one token, sample it), so the baseline gets exactly the
same treatment as the speculative sampler.

Every tensor a round touches lives in a `SpeculativeDecoder`, allocated once: token buffer, per-row lengths, both
`RaggedCache`s, the round's random numbers and the statistics. A round therefore has fixed shapes and reads no value
on the host, which is what `torch.compile(fullgraph=True)` and CUDA graph capture need. The host launches
`ceil(R / (gamma + 1))` rounds, where `R` is the most tokens any row still needs (each of those rounds is needed by
that row, so none is wasted), and then reads the rows' lengths once: about 3 host reads for a 64-token image
instead of one per round. More prompts than rows are streamed: a row whose image is done takes the next
prompt at the following host read (continuous batching), so no row idles while prompts wait. Random numbers are
drawn from the caller's generator into a fixed buffer before each round, so the eager, compiled and graph-replayed
rounds draw the same samples.
"""

import functools
import itertools
import math
import time
import types

import torch

from . import sampling
from .cache import RaggedCache
from .checks import (check_adaptive_gamma, check_compile_options, check_decoder_arguments, check_inputs,
                     check_round_arguments, placement)
from .sampling import SamplingConfig


def resolve_mode(mode: str, device: torch.device) -> str:
    """`auto`: CUDA graphs on a GPU; eager on the CPU, where a compiled round is faster only after an 11-25 s first
    call (BENCHMARKS.md). The mode itself is checked by `check_decoder_arguments`."""
    if mode == "auto":
        return "cuda-graph" if device.type == "cuda" else "eager"
    return mode


class SpeculativeDecoder:
    """Owns the buffers and the compiled / captured rounds for one (teacher, draft, gamma, batch size, sampling).

    Build it once and call `generate` many times: compilation or graph capture happens on the first round of each
    draft length and later calls replay it.

        decoder = SpeculativeDecoder(teacher, draft, gamma=8, batch_size=1)
        record = decoder.generate(teacher.class_prompt([3]), max_new_tokens=64, generator=torch.Generator())

    Args:
        teacher: the `VQGPTForCausalLM` whose distribution is sampled.
        draft: a smaller VQGPT or an `EarlyExitDraft`; None decodes the teacher alone (plain sampling).
        gamma: draft tokens per round (the largest one with `adaptive_gamma`); ignored without a draft.
        batch_size: rows per call (prompts of another batch size need another decoder).
        sampling: `SamplingConfig` (temperature, top-k, top-p, guidance, greedy).
        mode: `eager`, `compile` (`torch.compile(fullgraph=True)`; on CUDA its kernels are then captured like
            `cuda-graph`), `cuda-graph` (one captured `torch.cuda.CUDAGraph` per round of eager kernels), or `auto`.
        relaxed_neighbours: LOSSY `(K, k)` latent-neighbour table for `relaxed_accept`, or None (exact).
        compile_options: extra keyword arguments for `torch.compile` (e.g. `backend=...` in tests). On the CPU, Inductor
            runs with its C++ wrapper (`options={"cpp_wrapper": True}`) unless these say otherwise.
            `{"freeze_weights": True}` also compiles the models' weights in as constants, packed into Inductor's C++
            GEMM templates with their epilogues fused (CPU; a first compile of a few minutes, autotuned; BENCHMARKS.md,
            "Frozen weights"); a call after the weights changed in place raises instead of using stale ones.
            Each round is compiled for this decoder alone and runs without dynamo's guard checks (once per call the
            decoder checks the models' dtype and device instead); `{"skip_guards": False}` keeps dynamo's guards.
    """

    def __init__(
        self,
        teacher,
        draft=None,
        gamma: int = 4,
        batch_size: int = 1,
        sampling: SamplingConfig = SamplingConfig(),
        mode: str = "auto",
        relaxed_neighbours: torch.Tensor | None = None,
        compile_options: dict | None = None,
    ):
        check_compile_options(compile_options)
        compile_options = compile_options or {}
        check_decoder_arguments(teacher, draft, gamma, batch_size, sampling, mode, relaxed_neighbours,
                                compile_options.get("freeze_weights", False))
        config = teacher.config
        self.teacher, self.draft = teacher, draft
        self.gamma = gamma if draft is not None else 0
        self.batch_size = batch_size
        self.num_chains = sampling.num_drafts**sampling.tree_depth if draft is not None else 1  # per row
        self.rows = batch_size * self.num_chains  # one buffer row per draft chain
        self.sampling = sampling
        self.device, self.dtype = placement(teacher)
        self.mode = resolve_mode(mode, self.device)
        self.relaxed_neighbours = relaxed_neighbours
        self.compile_options = compile_options
        self.freeze_weights = compile_options.get("freeze_weights", False)
        if not isinstance(self.compile_options.get("skip_guards", True), bool):
            raise ValueError(f"`compile_options['skip_guards']` must be True or False, got "
                             f"{self.compile_options['skip_guards']!r}.")
        self.max_position = config.max_position_embeddings - 1
        # Positions are slots: one slot per grid position, rounded up to 8 so that attention needs no padded copy of
        # the mask (the extra slots are never visible: no query sits there).
        self.cache_length = -(-config.max_position_embeddings // 8) * 8
        K, B, G = config.codebook_size, batch_size, self.gamma
        R = self.rows
        device = self.device

        rows = 2 * R if sampling.guided else R
        self.teacher_cache = self._cache(teacher, rows)
        self.draft_cache = self._cache(draft, rows) if draft is not None else None
        # Round state. `sequences` has room for a finished row to keep writing (it rides along) past the grid.
        self.sequences = torch.zeros(R, self.cache_length + G + 1, dtype=torch.long, device=device)
        self.n = torch.ones(R, dtype=torch.long, device=device)  # tokens so far, per row (and chain)
        self.total = torch.full((), self.cache_length, dtype=torch.long, device=device)  # tokens at the end
        self.round_index = torch.zeros((), dtype=torch.long, device=device)
        # One round's U[0, 1) draws; float64, as float32's 2**-24 grid skews the race for codes of p below ~2**-24.
        self.noise = torch.zeros(R, G * K + G + K, dtype=torch.float64, device=device)
        self.round_starts = torch.zeros(self.cache_length, B, dtype=torch.long, device=device)  # n before round r
        self.round_accepted = torch.zeros(self.cache_length, B, dtype=torch.long, device=device)
        self.arange = torch.arange(self.cache_length, device=device)
        # Additive causal masks, one row per query slot, in the models' dtype: SDPA uses them as they are (a boolean
        # mask is converted to this form in every layer of every forward).
        visible = torch.ones(self.cache_length, self.cache_length, dtype=torch.bool, device=device).tril()
        self.causal = torch.zeros(visible.shape, dtype=self.dtype, device=device).masked_fill(~visible, float("-inf"))
        self.no_drafts = torch.zeros(R, dtype=torch.long, device=device)  # plain decoding accepts none
        self.chain_rows = torch.arange(R, device=device).view(B, self.num_chains)  # buffer rows of each row's chains
        # A token tree as chains: at tree depth i the chains of one node draw with the noise of the node's first
        # chain (the same token), and only that chain is a candidate.
        C, k, depth = self.num_chains, sampling.num_drafts, sampling.tree_depth
        chain = torch.arange(C, device=device)
        spans = [k ** (depth - 1 - i) if i < depth else 1 for i in range(max(G, 1))]
        first = torch.stack([chain // span * span for span in spans], dim=1)  # (C, G): the node's first chain
        self.candidates = first == chain[:, None]
        self.noise_source = (self.chain_rows[:, :1, None] + first[None]).reshape(R, -1)  # (R, G) buffer rows
        self.tree = draft is not None and depth > 1
        self.reads_features = draft is not None and getattr(draft, "reads_features", False)
        if self.reads_features:
            # Fused teacher features by slot: index s + 1 holds slot s's, index 0 the zero feature before slot 0.
            self.features = torch.zeros(rows, self.cache_length + G + 2, draft.config.hidden_size, dtype=self.dtype,
                                        device=device)
            self.n_prev = torch.zeros(R, dtype=torch.long, device=device)  # n before the last round
        # Fixed addresses: mutating them in place does not stop CUDA graphs. Not with frozen weights: Inductor's
        # freezing turns every static input that a round only reads into a constant of the compiled round, and the
        # round's random numbers and the call's length are written between rounds (they were frozen at their values
        # of the compiling call: every round drew the same noise).
        if self.mode == "compile" and not self.freeze_weights:
            for tensor in self._buffers():
                torch._dynamo.mark_static_address(tensor)
        self._rounds: dict[int, callable] = {}
        self._graphs: list = []  # keeps captured graphs (and their memory pools) alive
        self._round_codes: dict = {}  # gamma -> the code object of the round compiled for this decoder alone
        self._frozen_versions: tuple | None = None  # with frozen weights: the weights' versions they were compiled at
        self.cost_ratio: float | None = None
        # Adaptive gamma: how many rounds run between two host reads of the running acceptance (each call starts
        # from the prior, so it must look early).
        self.adaptive_rounds_per_read = 2

    def _buffers(self) -> list[torch.Tensor]:
        tensors = [self.sequences, self.n, self.total, self.round_index, self.noise, self.round_starts,
                   self.round_accepted, self.arange, self.causal, self.no_drafts, self.chain_rows, self.candidates,
                   self.noise_source]
        if self.reads_features:
            tensors += [self.features, self.n_prev]
        for cache in (self.teacher_cache, self.draft_cache):
            if cache is not None:
                tensors += [cache.lengths] + [t for layer in cache.layers for t in (layer.keys, layer.values)]
        return tensors

    def _cache(self, model, rows: int) -> RaggedCache:
        config = model.config
        cache = RaggedCache(model.num_layers, self.cache_length, track_lengths=False)  # the engine owns `n`
        cache.early_initialization(
            batch_size=rows, num_heads=config.num_attention_heads,
            head_dim=config.hidden_size // config.num_attention_heads,
            dtype=self.dtype, device=self.device,
        )
        return cache

    # -- the round: draft -> verify -> accept -> commit -------------------------------------------------------
    def _positions(self, start, length):
        """Positions `(B, length)` = `start[b] + i`, which are also the cache slots, and their additive causal masks
        `(B, 1, length, L)`: query slot `s` sees key slots `<= s`, so stale slots beyond a row's length are hidden
        (the bottom-right causal mask of every row at once). Positions are clamped to `[0, max_position]`: slots past
        the grid all share the last one, so predictions from there on are no conditionals of the drafts (block
        verification ends a row's block at its end for this); drafts past the end only ride along."""
        positions = (start[:, None] + self.arange[:length]).clamp_(0, self.max_position)
        return positions, self.causal[positions].unsqueeze(1)

    def _forward(self, model, cache, tokens, positions, mask, logits_to_keep=0):
        """Warped logits of a pass of `model` over slots `positions`. With a feature draft, a teacher pass keeps its
        fused features and a draft pass reads them."""
        extra = {}
        if self.reads_features:
            extra = {"output_hidden_states": True} if model is self.teacher else {"features": self._features_at(positions)}
        out = model(tokens, cache=cache, attention_mask=mask, position_ids=positions, use_cache=True,
                    cfg_scale=self.sampling.cfg_scale, logits_to_keep=logits_to_keep, **extra)
        if "output_hidden_states" in extra:
            self._keep_features(out.hidden_states, positions)
        return self.sampling.warp(out.logits)

    def _all_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Per-row `index` for every row the models run: with guidance the unconditional rows follow the same map."""
        return torch.cat([index, index]) if self.sampling.guided else index

    def _features_at(self, positions: torch.Tensor) -> torch.Tensor:
        """The kept features the draft reads at slots `positions` `(B, T)`: slot `s` reads slot `s - 1`'s."""
        index = self._all_rows(positions)
        return self.features.gather(1, index[..., None].expand(-1, -1, self.features.shape[-1]))

    def _keep_features(self, hidden_states, positions):
        """Fuse the teacher's hidden states of slots `positions` `(B, T)` and keep them at index `slot + 1`."""
        fused = self.draft.fuse_features(hidden_states)  # (B', T, C)
        index = self._all_rows(positions + 1)
        self.features.scatter_(1, index[..., None].expand_as(fused), fused.to(self.features.dtype))

    def _draw(self, logits, exponentials):
        """Token and probabilities from warped logits `(B, K)`: the exponential race, or argmax when greedy."""
        if not self.sampling.do_sample:
            return logits.argmax(-1), None
        probs = logits.softmax(-1)
        return sampling.sample_categorical(probs, exponentials=exponentials), probs

    def _noise(self, gamma):
        """This round's random numbers: `(B, gamma, K)` races for the drafts, `(B, gamma)` uniforms for the
        acceptance test, `(B, K)` race for the token after the accepted prefix."""
        K, G, B, u = self.teacher.config.codebook_size, self.gamma, self.rows, self.noise
        races = sampling.exponential_from_uniform(u[:, : G * K].view(B, G, K)[:, :gamma]).float()  # E of any size
        if self.tree:  # chains of one tree node share the node's draw
            races = races[self.noise_source[:, :gamma], self.arange[:gamma]]
        r = u[:, G * K : G * K + gamma].float()
        last = sampling.exponential_from_uniform(u[:, G * K + G :]).float()
        return races, r, last

    def draft_tokens(self, gamma, races):
        """`gamma` draft tokens `(B, gamma)` and their `q` `(B, gamma, K)` (None when greedy). The draft's cache is
        valid up to slot `n - 3`; its first step re-reads slots `n - 2, n - 1` (the last draft of a fully accepted
        round was never fed, and a rejected slot holds a stale draft), the next ones feed the previous draft."""
        positions, masks = self._positions(self.n - 2, gamma + 1)  # the round's, built once: (B, gamma + 1)
        tokens = self.sequences.gather(1, positions[:, :2])
        drafted, q = [], []
        for i in range(gamma):
            if i > 0:
                tokens, step = drafted[-1][:, None], slice(i + 1, i + 2)
            else:
                step = slice(0, 2)
            logits = self._forward(self.draft, self.draft_cache, tokens, positions[:, step], masks[:, :, step],
                                   logits_to_keep=1)[:, -1]
            token, probs = self._draw(logits, races[:, i])
            drafted.append(token)
            q.append(probs)
        q = torch.stack(q, dim=1) if self.sampling.do_sample else None
        return torch.stack(drafted, dim=1), q

    def draft_from_features(self, gamma, races):
        """`draft_tokens` for a feature-conditioned draft. Its cache is valid below `n_prev` (`n` before the last
        round); the catch-up pass re-reads the fixed `gamma_max + 1` slots from there (teacher feature of the slot
        before, token), which covers every slot the last round committed; its output at slot `n - 1` gives the first
        draft. Each later step feeds the draft token with the draft's own hidden state of the slot before."""
        C = self.draft.config.hidden_size  # the draft's width (features are fused to it)
        positions, masks = self._positions(self.n_prev, self.gamma + 1)
        tokens = self.sequences.gather(1, positions)
        out = self.draft(tokens, self._features_at(positions), cache=self.draft_cache, attention_mask=masks,
                         position_ids=positions, use_cache=True, cfg_scale=self.sampling.cfg_scale, return_logits=False)
        last = self._all_rows((self.n - 1 - self.n_prev).clamp(min=0))  # the last committed slot (finished rows: any)
        hidden = out.hidden_states.gather(1, last[:, None, None].expand(-1, 1, C))  # (B', 1, C): the head runs on it alone
        logits = self.sampling.warp(self.draft.head(hidden, self.sampling.cfg_scale))[:, -1]
        positions, masks = self._positions(self.n, max(gamma - 1, 1))  # slots of drafts 1 .. gamma - 1
        drafted, q = [], []
        for i in range(gamma):
            if i > 0:
                out = self.draft(drafted[-1][:, None], hidden, cache=self.draft_cache, attention_mask=masks[:, :, i - 1 : i],
                                 position_ids=positions[:, i - 1 : i], use_cache=True, cfg_scale=self.sampling.cfg_scale)
                logits, hidden = self.sampling.warp(out.logits)[:, -1], out.hidden_states
            token, probs = self._draw(logits, races[:, i])
            drafted.append(token)
            q.append(probs)
        q = torch.stack(q, dim=1) if self.sampling.do_sample else None
        return torch.stack(drafted, dim=1), q

    def verify(self, drafted):
        """The teacher's warped logits `(B, gamma + 1, K)` at the last committed token and every draft (for a
        feature draft, the pass's fused features are kept by slot)."""
        positions, mask = self._positions(self.n - 1, drafted.shape[1] + 1)
        tokens = self.sequences.gather(1, positions[:, :1])
        if drafted.shape[1]:
            tokens = torch.cat([tokens, drafted], dim=1)
        return self._forward(self.teacher, self.teacher_cache, tokens, positions, mask)

    def accept(self, p_logits, q, drafted, r, last):
        """Accepted drafts per buffer row `(R,)` and the next token `(R,)`; with several chains, also the winning
        chain's buffer row for every buffer row `(R,)` (None with one chain)."""
        if drafted.shape[1] == 0:  # plain decoding: sample p
            return self.no_drafts, self._draw(p_logits[:, 0], last)[0], None
        if self.num_chains > 1:
            return self._accept_chains(p_logits, q, drafted, r, last)
        return (*self._accept_one(p_logits, q, drafted, r, last), None)

    def _accept_chains(self, p_logits, q, drafted, r, last):
        B, C, gamma = self.batch_size, self.num_chains, drafted.shape[1]
        if self.sampling.do_sample:
            K = p_logits.shape[-1]
            n, chain, next_token = sampling.multi_draft_accept(
                p_logits.softmax(-1).view(B, C, gamma + 1, K), q.view(B, C, gamma, K), drafted.view(B, C, gamma),
                r=r.view(B, C, gamma), exponentials=last.view(B, C, K)[:, 0],
                candidates=self.candidates[:, :gamma] if self.tree else None)
        else:  # greedy chains are all the same chain
            n, next_token = sampling.greedy_accept(p_logits[::C], drafted[::C])
            chain = torch.zeros_like(n)
        winner = self.chain_rows.gather(1, chain[:, None]).expand(B, C).reshape(-1)
        return n.repeat_interleave(C), next_token.repeat_interleave(C), winner

    def _accept_one(self, p_logits, q, drafted, r, last):
        if not self.sampling.do_sample:
            return sampling.greedy_accept(p_logits, drafted)
        p = p_logits.softmax(-1)
        if self.relaxed_neighbours is not None:
            return sampling.relaxed_accept(p, q, drafted, self.relaxed_neighbours, r=r, exponentials=last)
        if self.sampling.verification == "block":  # a block ends at the sequence's end (`_positions`)
            lengths = (self.total - self.n).clamp(max=drafted.shape[1])
            return sampling.block_accept(p, q, drafted, eta=r, exponentials=last, lengths=lengths)
        return sampling.speculative_accept(p, q, drafted, r=r, exponentials=last)

    def commit(self, drafted, accepted, next_token, winner=None):
        """Write the accepted drafts and the next token after each row's `n`; record the round; advance `n`. With
        several chains, every chain of a row takes the winning chain's tokens and key/value slots first."""
        gamma = drafted.shape[1]
        if winner is not None:
            drafted = drafted[winner]
            # The round wrote slots n - 2 .. n + gamma - 1 of both caches (the draft's first step re-reads two).
            slots = ((self.n - 2).clamp(min=0)[:, None] + self.arange[: gamma + 3]).clamp(max=self.cache_length - 1)
            buffers = [t for cache in (self.teacher_cache, self.draft_cache) for layer in cache.layers
                       for t in (layer.keys, layer.values)]
            _copy_rows(buffers, winner, slots)
            if self.reads_features:  # features of slots n - 1 .. are kept at index slot + 1
                _copy_rows([self.features.unsqueeze(1)], winner, (slots + 1).clamp(max=self.features.shape[1] - 1))
        if gamma == 0:  # plain decoding: every row takes its token (a finished or idle row stays at `total`)
            self.sequences.scatter_(1, self.n[:, None], next_token[:, None])
            self.n.add_(self.n < self.total)
            return
        out = torch.cat([drafted, next_token[:, None]], dim=1)  # (B, gamma + 1)
        out.scatter_(1, accepted[:, None], next_token[:, None])  # drafts up to the first rejection, then it
        self.sequences.scatter_(1, self.n[:, None] + self.arange[: gamma + 1], out)  # later slots: stale, overwritten
        index = self.round_index.view(1)
        first = self.chain_rows[:, 0]  # statistics per row: its first chain's (all chains agree)
        self.round_starts.index_copy_(0, index, self.n[first][None])
        self.round_accepted.index_copy_(0, index, accepted[first][None])
        self.round_index.add_(1)
        if self.reads_features:
            self.n_prev.copy_(self.n)
        self.n.add_(torch.minimum(accepted + 1, self.total - self.n))  # finished rows stay at `total`

    def round(self, gamma: int) -> None:
        """One fixed-shape round (Algorithm 1) on the decoder's buffers."""
        check_round_arguments(gamma=gamma, most=self.gamma)  # (Python values: checked once when traced)
        races, r, last = self._noise(gamma)
        if gamma:
            draft = self.draft_from_features if self.reads_features else self.draft_tokens
            drafted, q = draft(gamma, races)
        else:
            drafted, q = self.sequences.new_zeros(self.rows, 0), None
        p_logits = self.verify(drafted)
        accepted, next_token, winner = self.accept(p_logits, q, drafted, r, last)
        self.commit(drafted, accepted, next_token, winner)

    # -- building and replaying rounds ------------------------------------------------------------------------
    def _round_fn(self, gamma: int):
        if gamma not in self._rounds:
            self._rounds[gamma] = self._build(gamma)
        return self._rounds[gamma]

    def _build(self, gamma: int):
        def run():
            with torch.inference_mode():
                self.round(gamma)

        if self.mode == "eager":
            return run
        if self.mode == "compile":
            # With dynamo's guards one code object serves every decoder and gamma: allow a recompile per (decoder,
            # gamma), shapes static.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            options = {"fullgraph": True, "dynamic": False, **self.compile_options}
            options.pop("freeze_weights", None)  # `self.freeze_weights`
            # (`torch.compile` takes either a mode or options; a backend other than Inductor has no wrapper)
            skip_guards = options.pop("skip_guards", True) and "mode" not in options
            if self.device.type == "cpu" and "backend" not in options and "mode" not in options:
                # Inductor's C++ wrapper: the round's ~100-300 kernel calls are made from C++ instead of a Python
                # wrapper, 20-25 % faster per round on 2 CPU cores for plain and speculative decoding alike
                # (BENCHMARKS.md), for a longer first compile (about a minute per draft length, then cached on disk).
                options["options"] = {"cpp_wrapper": True, **options.get("options", {})}
            if self.freeze_weights:  # also patched around the compiling call (`_frozen`); in the options they make the frozen rounds
                # a backend of their own, so that they never share compiled entries of `round` with unfrozen ones
                options["options"] = {**options.get("options", {}), **FROZEN_INDUCTOR_OPTIONS}
            if skip_guards:
                # The round compiled for this decoder and gamma alone (a code object of its own, so one compiled
                # entry) with dynamo's guards filtered down to the global-state one: checking ~2,000 guards (every
                # parameter, buffer and module attribute) before each call cost 15-25 % of a compiled plain step on 2
                # CPU cores (BENCHMARKS.md). What they protected is checked once per call instead (`_check_models`).
                options["options"] = {**options.get("options", {}), "guard_filter_fn": _global_state_guards}
                round_fn = _own_code(SpeculativeDecoder.round)
                self._round_codes[gamma] = round_fn.__code__
                compiled = functools.partial(torch.compile(round_fn, **options), self)
            else:
                compiled = torch.compile(self.round, **options)

            def run_compiled():
                with torch.inference_mode():
                    compiled(gamma)

            if self.freeze_weights:
                run_compiled = self._frozen(run_compiled)

            # On CUDA, Inductor's fused kernels are captured as one graph per round, like the eager ones: the same
            # capture as `cuda-graph` mode, which `reduce-overhead` (cudagraph trees) did not give the whole round.
            return self._capture(run_compiled) if self.device.type == "cuda" else run_compiled
        return self._capture(run)

    def _frozen(self, run):
        """`run` whose first call, the one that compiles, runs with Inductor's `freezing` and `max_autotune` set in its
        global config (as compile options alone they leave the parameters graph inputs and the `addmm` calls in
        place): the models' parameters become constants that Inductor folds and packs into its C++ GEMM templates
        (the `CPP` backend), the GEMMs fused with their epilogues, no oneDNN call per matrix product. The weights are
        then part of the compiled round: `decode` refuses to run after they change."""
        compiled_once = False

        def call():
            nonlocal compiled_once
            if compiled_once:
                return run()
            with torch._inductor.config.patch(**FROZEN_INDUCTOR_OPTIONS):
                run()
            compiled_once = True
            self._frozen_versions = self._weight_versions()

        return call

    def _weight_versions(self) -> tuple:
        """The models' parameters (identity) and the sum of their in-place version counters, which moves when any
        weight is written."""
        models = [self.teacher] + ([self.draft] if self.draft is not None else [])
        parameters = [p for model in models for p in model.parameters()]
        return tuple(map(id, parameters)), sum(p._version for p in parameters)

    def _check_models(self) -> None:
        """Once per call, what the compiled rounds rely on: the models' dtype and device are the decoder's (the
        buffers and compiled kernels are made for them), and frozen weights are the ones compiled in."""
        for name, model in (("teacher", self.teacher), ("draft", self.draft)):
            if model is None:
                continue
            device, dtype = placement(model)
            if (device, dtype) != (self.device, self.dtype):
                raise ValueError(f"The {name} moved to {dtype} on {device} after this decoder was built for "
                                 f"{self.dtype} on {self.device}: build a new decoder for it.")
        if self._frozen_versions is not None and self._weight_versions() != self._frozen_versions:
            raise ValueError("The models' weights changed after this decoder compiled them in as constants "
                             "(`compile_options={'freeze_weights': True}`): build a new decoder after "
                             "`torch._dynamo.reset()`, or decode without `freeze_weights`.")

    def _capture(self, run):
        """Warm up on a side stream (library handles, allocator), then capture one round as a CUDA graph. The
        warm-up rounds run on a dummy prompt, so this happens before a call's `reset`, never during a call."""
        self.reset(self._null_prompt(), self.cache_length)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        self._graphs.append(graph)
        return graph.replay

    def _null_prompt(self) -> torch.LongTensor:
        """A valid prompt for warm-up and calibration rounds: the null class for every row."""
        return torch.full((self.batch_size, 1), self.teacher.config.null_token_id, device=self.device)

    # -- one call ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def reset(self, input_ids: torch.LongTensor, total: int) -> None:
        """Start a call: the prompt in the buffer, lengths at the prompt, prefill both caches (prompts of more than
        one token, eagerly: it happens once per call)."""
        input_ids = input_ids.repeat_interleave(self.num_chains, dim=0)  # every chain starts from its row's prompt
        B, P = input_ids.shape
        self.sequences.zero_()
        self.sequences[:, :P] = input_ids
        self.n.fill_(P)
        self.total.fill_(total)
        self.round_index.zero_()
        if self.reads_features:
            self.features.zero_()
            self.n_prev.fill_(P - 1)
        self._prefill(P)

    def _prefill(self, P: int) -> None:
        """Fill slots `[0, P - 1)` of both caches (and the kept features) from every row's prompt in `sequences`: the
        rounds feed slot `P - 1` onwards. Eager, once per call and once per refill of prompts longer than one token;
        a row that is not new gets back the same keys and values (same tokens, positions and shapes)."""
        if P == 1:
            return
        tokens = self.sequences[:, : P - 1]
        positions, mask = self._positions(torch.zeros_like(self.n), P - 1)
        self._forward(self.teacher, self.teacher_cache, tokens, positions, mask, logits_to_keep=1)
        if self.draft is not None:
            self._forward(self.draft, self.draft_cache, tokens, positions, mask, logits_to_keep=1)

    def calibrate_cost_ratio(self, repeats: int = 5) -> float:
        """`c` for adaptive gamma, measured once per decoder on its own rounds: a round costs `a + b * gamma`
        (verify + `gamma` draft steps); timing rounds at gamma 1 and `self.gamma` (device synchronised, median of
        `repeats`) gives `c = b / a`, a draft step over a verify pass, as the rounds really run (graphs included)."""
        check_round_arguments(repeats=repeats)
        if self.cost_ratio is not None:
            return self.cost_ratio
        prompt = self._null_prompt()
        seconds = {}
        for gamma in sorted({1, max(self.gamma, 2)}):
            fn = self._round_fn(gamma)
            times = []
            for _ in range(repeats):
                self.reset(prompt, self.cache_length)
                fn()  # a first round, so the timed one starts from a filled cache like the rounds of a call
                _synchronize(self.device)
                tic = time.perf_counter()
                fn()
                _synchronize(self.device)
                times.append(time.perf_counter() - tic)
            seconds[gamma] = sorted(times)[len(times) // 2]
        g = max(self.gamma, 2)
        per_draft = max(seconds[g] - seconds[1], 0.0) / (g - 1)
        self.cost_ratio = per_draft / max(seconds[1] - per_draft, 1e-9)
        return self.cost_ratio

    def generate(
        self,
        input_ids: torch.LongTensor,
        max_new_tokens: int | None = None,
        generator: torch.Generator | None = None,
        adaptive_gamma: bool = False,
        cost_ratio: float | None = None,
    ) -> dict:
        """Decode `max_new_tokens` (default: the rest of the grid) after `input_ids` `(N, P)`: `N = batch_size`
        prompts, or any number of prompts, streamed through the decoder's `batch_size` rows (a row takes
        the next prompt as soon as its image is done: continuous batching). Returns the raw record: sequences
        `(N, P + new)`, per-round starts / accepted `(rounds, batch_size)` and the gamma of each round
        (`SpeculativeOutput.from_record` turns it into statistics)."""
        max_new_tokens = check_inputs(self.teacher, input_ids, max_new_tokens, generator)
        check_adaptive_gamma(adaptive_gamma, cost_ratio)
        return self.decode(input_ids, max_new_tokens, generator, adaptive_gamma, cost_ratio)

    def decode(self, input_ids, max_new_tokens: int, generator=None, adaptive_gamma=False, cost_ratio=None) -> dict:
        """`generate` without the argument checks (callers that checked them already).

        The host launches batches of rounds and reads the rows' lengths once after each: `ceil(R / (gamma + 1))`
        rounds, where `R` is the most tokens any row still needs (each of those rounds is needed by that row), or,
        while prompts wait for a row, the fewest tokens any row still needs (no row can finish sooner, and the
        first one that does is refilled at once)."""
        self._check_models()
        input_ids = input_ids.long()  # int32 prompts are accepted; the buffers (and refills) are torch.long
        N, P = input_ids.shape
        B = self.batch_size
        total = P + max_new_tokens
        c = None
        if adaptive_gamma and self.gamma > 1:
            c = cost_ratio if cost_ratio is not None else self.calibrate_cost_ratio()
        accepted_sum, tested_sum = 1.0, 2.0  # Beta(1, 1) prior at every call: a seed gives the same gammas and images
        for gamma in range(1, self.gamma + 1) if c is not None else [self.gamma]:
            self._round_fn(gamma)  # build (compile / capture) every round this call may run, before its reset
        prompts = input_ids[:B]
        if N < B:  # idle rows ride along on a copy of the first prompt, already at their end
            prompts = torch.cat([prompts, input_ids[:1].expand(B - N, -1)])
        self.reset(prompts, total)
        owner = list(range(min(N, B))) + [-1] * (B - N)  # which image each row is drawing (-1: none)
        if N < B:
            self.n[self.chain_rows[N:].reshape(-1)] = total
        queue = min(N, B)  # the next prompt to start
        prefills = int(P > 1)  # prompt passes of both models: the call's and each refill's (`_prefill`)
        sequences = torch.empty(N, total, dtype=torch.long, device=self.device)
        gammas, starts, accepted = [], [], []
        left = [max_new_tokens if o >= 0 else 0 for o in owner]  # tokens each row still needs
        while True:
            busy = [t for t, o in zip(left, owner) if o >= 0]
            if not busy:
                break
            remaining = min(busy) if queue < N else max(busy)
            gamma = self.gamma
            if c is not None:
                gamma = sampling.choose_gamma(accepted_sum / tested_sum, c, self.gamma)
            rounds = math.ceil(remaining / (gamma + 1))
            if c is not None:
                rounds = min(rounds, self.adaptive_rounds_per_read)  # adaptive gamma looks at alpha again soon
            fn = self._round_fn(gamma)
            for _ in range(rounds):
                self.noise.uniform_(generator=generator)
                fn()
            gammas += [gamma] * rounds
            starts.append(self.round_starts[:rounds].clone())
            accepted.append(self.round_accepted[:rounds].clone())
            self.round_index.zero_()
            # The only host read: once per batch of rounds (together with the running alpha when adaptive).
            read = self.total - self.n[self.chain_rows[:, 0]]
            if c is not None:
                done, tested = sampling.round_counts(starts[-1], accepted[-1], gamma, total)
                read = torch.cat([read, torch.stack([done.sum(), tested.sum()])])
            values = read.tolist()
            left = values[:B]
            if c is not None:
                accepted_sum += values[B]
                tested_sum += values[B + 1]
            finished = [b for b in range(B) if owner[b] >= 0 and left[b] == 0]
            if finished:
                rows = torch.tensor(finished, device=self.device)
                images = torch.tensor([owner[b] for b in finished], device=self.device)
                sequences[images] = self.sequences[self.chain_rows[rows, 0], :total]
                for b in finished:
                    owner[b] = -1
                refill = finished[: N - queue]
                if refill:
                    self._refill(refill, input_ids[queue : queue + len(refill)])
                    prefills += int(P > 1)
                    for b in refill:
                        owner[b], left[b] = queue, max_new_tokens
                        queue += 1
        drawn = min(N, B)  # rows that never had a prompt (N < B) ride along idle: not in the statistics
        return {
            "sequences": sequences,
            "starts": torch.cat(starts)[:, :drawn],
            "accepted": torch.cat(accepted)[:, :drawn],
            "gammas": gammas,
            "total": total,
            "prefills": prefills,
        }

    def _refill(self, slots: list[int], prompts: torch.LongTensor) -> None:
        """Rows `slots` (every chain of each) start drawing `prompts` `(len(slots), P)`; prompts longer than one token
        are prefilled (`_prefill`). Nothing else is cleared: the rounds never read a cache or feature slot of a row
        before writing it, as at a call's start."""
        rows = self.chain_rows[torch.tensor(slots, device=self.device)].reshape(-1)
        P = prompts.shape[1]
        self.sequences[rows] = 0
        self.sequences[rows, :P] = prompts.repeat_interleave(self.num_chains, dim=0)
        self.n[rows] = P
        if self.reads_features:
            self.n_prev[rows] = P - 1
        self._prefill(P)


def _copy_rows(buffers: list[torch.Tensor], source: torch.Tensor, slots: torch.Tensor) -> None:
    """Every buffer row `i` takes row `source[i]`'s entries at its slots `slots[i]` `(R, W)`, in every `(rows, heads,
    slots, dim)` buffer (keys and values of every layer; the feature buffer as a 1-head view). With guidance a buffer
    holds the unconditional rows after the conditional ones, which follow the same map."""
    R = source.shape[0]
    rows = torch.arange(R, device=source.device)
    if buffers[0].shape[0] == 2 * R:
        source, rows, slots = torch.cat([source, source + R]), torch.cat([rows, rows + R]), torch.cat([slots, slots])
    for buffer in buffers:
        buffer[rows[:, None], :, slots] = buffer[source[:, None], :, slots]


# Inductor settings of `compile_options={"freeze_weights": True}` (CPU): weights as constants, packed into Inductor's
# C++ GEMM templates with their epilogues fused (BENCHMARKS.md, "Frozen weights").
FROZEN_INDUCTOR_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN",
                           "max_autotune_report_choices_stats": False, "autotune_num_choices_displayed": 0}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _own_code(function):
    """A copy of `function` with a code object of its own: dynamo keeps compiled entries per code object, so the copy's
    entries are never shared with another decoder's (its guards can then be filtered to almost nothing)."""
    code = function.__code__.replace(co_name=f"{function.__name__}_{next(_copies)}")
    return types.FunctionType(code, function.__globals__, code.co_name, function.__defaults__, function.__closure__)


_copies = itertools.count()


def _global_state_guards(guard_entries):
    """Keep only dynamo's global-state guard (grad mode, autocast, ...) of a round compiled for one decoder and gamma."""
    return [entry.guard_type == "GLOBAL_STATE" for entry in guard_entries]
