"""Batched speculative decoding of VQGPT image tokens: a draft proposes, the teacher verifies in one pass.

Each round: the draft samples `gamma` tokens one by one; the teacher scores all of them in a single forward;
`speculative_accept` (Leviathan et al. 2023, Algorithm 1) keeps a prefix per row and adds one token. Rows advance
by different amounts; both models keep a `RaggedCache` whose per-row lengths are moved back on rejection, so no
key/value is ever recomputed or copied.
"""

"""Speculative and plain sampling of VQGPT image tokens: the simple entry points over the decoding engine.

`speculative_sample` (Leviathan et al. 2023, Algorithm 1, batched): a draft proposes `gamma` tokens per round, the
teacher scores them in one pass, `speculative_accept` keeps a prefix per row and adds one token. `plain_sample` is
the same engine with no draft: the baseline every speedup is measured against. Both check their arguments with
`SamplingConfig` and `checks.py` before any buffer is sized, then run a cached `SpeculativeDecoder` (engine.py), so that
compilation or CUDA-graph capture happens once per (models, batch size, gamma, sampling settings).
"""

from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..models import VQGPTForCausalLM
from .checks import (check_adaptive_gamma, check_decoder_arguments, check_draft_matches, check_guidance,  # noqa: F401
                     check_inputs, check_model, placement, warn_if_training)
from .engine import SpeculativeDecoder
from .sampling import SamplingConfig, _is_int


@dataclass
class SpeculativeOutput:
    """Tokens and statistics of one `speculative_sample` call.

    sequences: `(B, prompt + new)` tokens, prompt included (like `generate()`).
    accepted_per_round / evaluated_per_round / proposed_per_round: `(rounds, rows)` drafts inside the image that were
        accepted / tested (accepted ones plus the first rejected one) / drafted, per round and decoder row that drew
        images (`min(B, batch_size)` rows; a streamed call's rows draw several images one after the other).
    gamma_per_round: draft length used in each round.
    accepted_by_position / evaluated_by_position: `(new,)` counts per generated token position (for heat maps).
    teacher_forwards / draft_forwards: teacher passes (prefill included) and draft steps made.
    active_per_round: `(rounds, rows)` whether the row was drawing an image in that round (a row whose image is done
        rides along until the batch's slowest row is; `None`: every row in every round).
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
    active_per_round: torch.Tensor | None = None

    @property
    def num_rounds(self) -> int:
        return len(self.gamma_per_round)

    @property
    def alpha(self) -> float:
        """Empirical acceptance probability per tested draft position, accepted / tested: estimates `sum_x min(p, q)`
        for token verification of one chain. With `num_drafts > 1` a position is accepted when any chain's candidate
        is (the multi-draft rule's acceptance, above `sum_x min(p, q)`: what the extra chains buy); with block
        verification it is the block rule's, never below the token rule's."""
        return pooled_statistics(self)["alpha"]

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted positions (what transformers reports for one chain); below alpha, as drafts after a
        rejection are lost. With `num_drafts > 1` the positions of one chain: each of the `num_drafts ** tree_depth`
        chains drafts them, so accepted over every drafted token is this divided by the number of chains."""
        return pooled_statistics(self)["acceptance_rate"]

    @property
    def acceptance_by_position(self) -> torch.Tensor:
        """Alpha per generated token position: accepted / tested there."""
        return self.accepted_by_position / self.evaluated_by_position.clamp(min=1)

    @property
    def tokens_per_teacher_call(self) -> float:
        """New tokens per row and verify round: what each teacher call produced for a row, a row that has finished
        its image and waits for the batch's slowest row counting as producing none (a batch's figure; at batch 1 and
        for `tokens_per_image_round` every round counts)."""
        return pooled_statistics(self)["tokens_per_teacher_call"]

    @property
    def tokens_per_image_round(self) -> float:
        """New tokens per round in which a row was drawing an image: the images' own figure (64 tokens over the
        rounds an image took, pooled), not lowered by rows that wait for a batch's slowest one. Equal to
        `tokens_per_teacher_call` at batch 1."""
        return pooled_statistics(self)["tokens_per_image_round"]

    @classmethod
    def from_record(cls, record: dict, prompt_length: int) -> "SpeculativeOutput":
        """Statistics of a decoder's raw record, computed once for all rounds after the call."""
        starts, accepted, gammas, total = record["starts"], record["accepted"], record["gammas"], record["total"]
        prefills = record.get("prefills", int(prompt_length > 1))  # streamed calls prefill every refill too
        R, B = starts.shape
        device = starts.device
        G = max(gammas, default=0)
        offsets = torch.arange(G, device=device)
        g = torch.tensor(gammas, device=device, dtype=torch.long)[:, None]  # (R, 1)
        in_image = offsets < torch.minimum(total - starts, g)[..., None]  # (R, B, G): drafts inside the image
        was_accepted = (offsets < accepted[..., None]) & in_image
        was_tested = (offsets <= accepted[..., None]) & in_image
        slots = (starts[..., None] + offsets).clamp(max=total - 1) - prompt_length
        by_position = lambda counts: torch.zeros(total - prompt_length, dtype=torch.float32, device=device).index_put_(  # noqa: E731
            (slots[in_image],), counts[in_image].float(), accumulate=True).cpu()
        return cls(
            sequences=record["sequences"],
            accepted_per_round=was_accepted.sum(-1),
            evaluated_per_round=was_tested.sum(-1),
            proposed_per_round=in_image.sum(-1),
            gamma_per_round=gammas,
            accepted_by_position=by_position(was_accepted),
            evaluated_by_position=by_position(was_tested),
            teacher_forwards=R + prefills,
            draft_forwards=sum(gammas) + (prefills if G > 0 else 0),
            active_per_round=(starts < total).cpu(),
        )


def pooled_statistics(outputs) -> dict:
    """The statistics of several calls (`SpeculativeOutput`s, or one) as one: every figure a ratio of sums (accepted
    over tested positions, new tokens over rounds), never a mean of per-call ratios, which weights a short call like a
    long one and is biased upwards (Jensen). The estimator every benchmark of the project reports and, for one call,
    `SpeculativeOutput`'s own figures. Returns `{"alpha", "acceptance_rate", "tokens_per_teacher_call",
    "tokens_per_image_round", "mean_gamma", "calls"}` (`None` values for no calls)."""
    outputs = [outputs] if hasattr(outputs, "accepted_per_round") else list(outputs)  # one record (a legacy one too)
    for index, out in enumerate(outputs):
        if not all(hasattr(out, name) for name in ("accepted_per_round", "evaluated_per_round", "gamma_per_round")):
            raise ValueError(f"`outputs[{index}]` is a {type(out).__name__}, not the output of a speculative call "
                             "(`speculative_sample`; a `plain_sample` result has no acceptance statistics).")
    if not outputs:
        return {"alpha": None, "acceptance_rate": None, "tokens_per_teacher_call": None,
                "tokens_per_image_round": None, "mean_gamma": None, "calls": 0}
    # only fields of the record, which the legacy loops' outputs have too
    accepted = sum(out.accepted_per_round.sum().item() for out in outputs)
    new_tokens = sum(out.accepted_by_position.numel() * out.sequences.shape[0] for out in outputs)
    row_rounds = sum(len(out.gamma_per_round) * out.accepted_per_round.shape[1] for out in outputs)
    # rows still drawing, per round: the legacy loops do not record it (their per-image figure is unknown, not the
    # per-row one, which counts rows that wait for the batch's slowest image)
    known = all(getattr(out, "active_per_round", None) is not None for out in outputs)
    image_rounds = sum(out.active_per_round.sum().item() for out in outputs) if known else None
    rounds = sum(len(out.gamma_per_round) for out in outputs)
    return {
        "alpha": accepted / max(sum(out.evaluated_per_round.sum().item() for out in outputs), 1),
        "acceptance_rate": accepted / max(sum(out.proposed_per_round.sum().item() for out in outputs), 1),
        "tokens_per_teacher_call": new_tokens / max(row_rounds, 1),
        "tokens_per_image_round": new_tokens / max(image_rounds, 1) if known else None,
        "mean_gamma": sum(sum(out.gamma_per_round) for out in outputs) / max(rounds, 1),
        "calls": len(outputs),
    }


class EarlyExitDraft(torch.nn.Module):
    """Self-speculative draft: the teacher's first `num_layers` blocks, its final norm and its head.

    Shares every weight with the teacher; nothing to train. Pass it as `draft` to `speculative_sample`. Errors name
    `argument`: the option a script's user set (`self_speculative_layers`), `num_layers` for a direct caller.
    """

    def __init__(self, teacher: VQGPTForCausalLM, num_layers: int, *, argument: str = "num_layers"):
        super().__init__()
        check_model(teacher, "teacher")
        if getattr(teacher, "reads_features", False) or isinstance(teacher, EarlyExitDraft):
            raise ValueError(f"`teacher` must be the full teacher model, got a {type(teacher).__name__} (a draft).")
        if not _is_int(num_layers):
            raise ValueError(f"`{argument}` must be an integer, got {num_layers!r}.")
        if teacher.config.num_hidden_layers < 2:
            raise ValueError(f"`teacher` has {teacher.config.num_hidden_layers} layer: an early-exit draft needs a "
                             f"model of at least 2 layers (it runs the first `{argument}` of them).")
        if not 1 <= num_layers < teacher.config.num_hidden_layers:
            raise ValueError(
                f"`{argument}` must be in [1, {teacher.config.num_hidden_layers - 1}], got {num_layers}."
            )
        self.teacher = teacher
        self.num_layers = num_layers
        self.config = teacher.config
        self.train(teacher.training)  # a new Module starts in training mode: take the teacher's (its dropout's)

    def forward(self, input_ids, **kwargs):
        return self.teacher(input_ids, num_layers=self.num_layers, **kwargs)

    def check_prompt(self, input_ids, max_new_tokens=None):
        self.teacher.check_prompt(input_ids, max_new_tokens)


# -- decoders, built once per setting and reused ----------------------------------------------------------------

_DECODERS: "OrderedDict[tuple, SpeculativeDecoder]" = OrderedDict()
MAX_CACHED_DECODERS = 8


def get_decoder(teacher, draft, gamma: int, batch_size: int, sampling: SamplingConfig, mode: str = "auto",
                relaxed_neighbours: torch.Tensor | None = None, freeze_weights: bool = False) -> SpeculativeDecoder:
    """The `SpeculativeDecoder` for this setting, built on first use and kept (the last `MAX_CACHED_DECODERS`),
    so that later calls replay its compiled rounds or CUDA graphs. `clear_decoders()` frees them."""
    # The models' device and dtype are in the key: a decoder's buffers and caches are allocated for them, so after
    # `teacher.to(...)` the next call builds a new decoder instead of mixing dtypes or devices.
    key = (id(teacher), id(draft), placement(teacher), placement(draft), gamma, batch_size, sampling, mode,
           None if relaxed_neighbours is None else id(relaxed_neighbours), freeze_weights)
    decoder = _DECODERS.get(key)
    if decoder is not None and decoder.teacher is teacher and decoder.draft is draft and (
        relaxed_neighbours is None or decoder.relaxed_neighbours is relaxed_neighbours
    ):
        _DECODERS.move_to_end(key)
        return decoder
    decoder = SpeculativeDecoder(teacher, draft, gamma, batch_size, sampling, mode, relaxed_neighbours,
                                 compile_options={"freeze_weights": True} if freeze_weights else None)
    _DECODERS[key] = decoder
    while len(_DECODERS) > MAX_CACHED_DECODERS:
        _DECODERS.popitem(last=False)
    return decoder


def clear_decoders() -> None:
    """Forget every cached decoder (and the buffers, compiled functions and graphs it holds)."""
    _DECODERS.clear()


# -- the entry points -------------------------------------------------------------------------------------------

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
    mode: str = "auto",
    verification: str = "token",
    num_drafts: int = 1,
    tree_depth: int = 1,
    batch_size: int | None = None,
    freeze_weights: bool = False,
) -> SpeculativeOutput:
    """Sample image tokens from `teacher` with `draft` proposing `gamma` tokens per round (Leviathan et al. 2023).

    Lossless: with `do_sample=True` the sequences are distributed exactly as `teacher.generate(input_ids,
    do_sample=True, temperature=..., top_k=..., top_p=..., cfg_scale=...)`; with `do_sample=False` they equal the
    teacher's greedy output token for token.

    Args:
        teacher: the `VQGPTForCausalLM` whose distribution is sampled.
        draft: a smaller `VQGPTForCausalLM` with the same codebook, classes and grid, or an `EarlyExitDraft`.
        input_ids: `(B, P)` prompts, `[class token, codes...]`, e.g. `teacher.class_prompt(labels)`. B >= 1.
        gamma: draft tokens per round (the maximum when `adaptive_gamma`), at most the grid's token count.
        max_new_tokens: tokens to generate (default: the rest of the grid).
        temperature, top_k, top_p: applied identically to the teacher's `p` and the draft's `q`.
        cfg_scale: classifier-free guidance scale, applied inside both models.
        generator: a `torch.Generator` (on the prompts' device) for reproducible sampling.
        adaptive_gamma: before each batch of rounds, choose gamma in `[1, gamma]` maximising the expected speedup
            `(1 - a^(g+1)) / ((1 - a)(g c + 1))` for the running acceptance `a` (every call starts from the
            prior 1/2) and cost ratio `c`.
        cost_ratio: `c` = draft step time / verify pass time; calibrated once per decoder when None (a timing, so
            the gammas, and with them a seeded call's images, may differ between processes: give `cost_ratio` for
            adaptive calls that reproduce anywhere).
        relaxed_neighbours: LOSSY, off by default. A `(K, k)` table from `latent_neighbours(codebook, k)`: accept
            a drafted code with the teacher's mass on its latent neighbours (`relaxed_accept`). Faster, but the
            output is no longer the teacher's distribution.
        mode: the engine's execution mode: `auto` (CUDA graphs on a GPU, eager on the CPU), `eager`, `compile`,
            `cuda-graph` (see `SpeculativeDecoder`).
        verification: `token` (Leviathan et al., `speculative_accept`) or `block` (Sun et al. 2025,
            `block_accept`: the draft block verified jointly, never fewer tokens in expectation). Both are lossless.
            With `block`, `alpha` counts the accepted prefix like `token` but no longer estimates `sum min(p, q)`.
        num_drafts: independent draft chains per row, all verified in the same teacher pass (`num_drafts x (gamma
            + 1)` tokens per row) and accepted by SpecInfer's multi-step speculative sampling (`multi_draft_accept`,
            lossless): more tokens per teacher call, more draft and verify work per round.
        tree_depth: with `num_drafts > 1`, branch at each of the first `tree_depth` draft positions: a token tree of
            `num_drafts ** tree_depth` chains that share their first tokens (1: independent chains).
        batch_size: rows decoded at once (default: every prompt). Fewer than the prompts streams them: a row
            whose image is done takes the next prompt (continuous batching), so rows that
            finish early do not wait for the slowest one.
        freeze_weights: with `mode="compile"`, compile the models' weights in as constants (Inductor's C++ GEMM
            templates on the CPU: plain decoding ~1.5x faster on 2 cores, BENCHMARKS.md "Frozen weights"; the first
            call autotunes for minutes; a call after the weights changed raises).
    """
    sampling = SamplingConfig(do_sample, temperature, top_k, top_p, cfg_scale, verification, num_drafts, tree_depth)
    new_tokens = check_inputs(teacher, input_ids, max_new_tokens, generator)
    check_guidance(teacher, input_ids, cfg_scale)
    if draft is None:
        raise ValueError("`draft` must be a draft model (a small VQGPTForCausalLM, a feature draft or an "
                         "`EarlyExitDraft`); for the teacher alone use `plain_sample(teacher, input_ids)`.")
    batch_size = input_ids.shape[0] if batch_size is None else batch_size
    check_decoder_arguments(teacher, draft, gamma, batch_size, sampling, mode, relaxed_neighbours, freeze_weights)
    warn_if_training(draft, "draft")  # every call: a cached decoder keeps the draft, whose mode may change
    check_adaptive_gamma(adaptive_gamma, cost_ratio)
    decoder = get_decoder(teacher, draft, gamma, batch_size, sampling, mode, relaxed_neighbours, freeze_weights)
    record = decoder.decode(input_ids, new_tokens, generator, adaptive_gamma, cost_ratio)
    return SpeculativeOutput.from_record(record, input_ids.shape[1])


@torch.inference_mode()
def plain_sample(
    model,
    input_ids: torch.LongTensor,
    max_new_tokens: int | None = None,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    generator: torch.Generator | None = None,
    mode: str = "auto",
    batch_size: int | None = None,
    freeze_weights: bool = False,
) -> torch.LongTensor:
    """Autoregressive sampling of `model` (a VQGPT or `EarlyExitDraft`) after `input_ids` `(B, P)`: the decoding
    engine with no draft, so the baseline runs exactly the machinery (caches, graphs) the speculative sampler runs.

    Distributed exactly as `model.generate(input_ids, do_sample=..., temperature=..., top_k=..., top_p=...,
    cfg_scale=...)`. Returns `(B, P + max_new_tokens)`. `batch_size`: rows decoded at once, and
    `freeze_weights`, as in `speculative_sample`.
    """
    sampling = SamplingConfig(do_sample, temperature, top_k, top_p, cfg_scale)
    new_tokens = check_inputs(model, input_ids, max_new_tokens, generator, argument="model")
    check_guidance(model, input_ids, cfg_scale)
    batch_size = input_ids.shape[0] if batch_size is None else batch_size
    check_decoder_arguments(model, None, 0, batch_size, sampling, mode, freeze_weights=freeze_weights)
    decoder = get_decoder(model, None, 0, batch_size, sampling, mode, freeze_weights=freeze_weights)
    return decoder.decode(input_ids, new_tokens, generator)["sequences"]
