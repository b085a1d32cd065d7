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
`check_sampling_arguments` before any buffer is sized, then run a cached `SpeculativeDecoder` (engine.py), so that
compilation or CUDA-graph capture happens once per (models, batch size, gamma, sampling settings).
"""

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..models import VQGPTForCausalLM
from .engine import SamplingConfig, SpeculativeDecoder, resolve_mode


@dataclass
class SpeculativeOutput:
    """Tokens and statistics of one `speculative_sample` call.

    sequences: `(B, prompt + new)` tokens, prompt included (like `generate()`).
    accepted_per_round / evaluated_per_round / proposed_per_round: `(rounds, B)` drafts inside the image that were
        accepted / tested (accepted ones plus the first rejected one) / drafted, per round.
    gamma_per_round: draft length used in each round.
    accepted_by_position / evaluated_by_position: `(new,)` counts per generated token position (for heat maps).
    teacher_forwards / draft_forwards: teacher passes (prefill included) and draft steps made.
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

    @classmethod
    def from_record(cls, record: dict, prompt_length: int) -> "SpeculativeOutput":
        """Statistics of a decoder's raw record, computed once for all rounds after the call."""
        starts, accepted, gammas, total = record["starts"], record["accepted"], record["gammas"], record["total"]
        R, B = starts.shape
        device = starts.device
        G = max(gammas, default=0)
        offsets = torch.arange(G, device=device)
        g = torch.tensor(gammas, device=device, dtype=torch.long)[:, None]  # (R, 1)
        in_image = offsets < torch.minimum(total - starts, g)[..., None]  # (R, B, G): drafts inside the image
        was_accepted = (offsets < accepted[..., None]) & in_image
        was_tested = (offsets <= accepted[..., None]) & in_image
        slots = (starts[..., None] + offsets).clamp(max=total - 1) - prompt_length
        by_position = lambda counts: torch.zeros(total - prompt_length, device=device).index_put_(  # noqa: E731
            (slots[in_image],), counts[in_image].float(), accumulate=True).cpu()
        return cls(
            sequences=record["sequences"],
            accepted_per_round=was_accepted.sum(-1),
            evaluated_per_round=was_tested.sum(-1),
            proposed_per_round=in_image.sum(-1),
            gamma_per_round=gammas,
            accepted_by_position=by_position(was_accepted),
            evaluated_by_position=by_position(was_tested),
            teacher_forwards=R + (prompt_length > 1),
            draft_forwards=sum(gammas) + (prompt_length > 1 and G > 0),
        )


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




# -- argument checks, shared by every sampling entry point ---------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_sampling_arguments(
    model,
    input_ids,
    max_new_tokens=None,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Raise `ValueError` naming the argument unless the settings make sense for `model`; returns the number of
    new tokens (default: the rest of the grid). One check for `plain_sample`, `speculative_sample`, the decoding
    engine and the `custom_generate` door, run before any buffer is sized."""
    config = model.config
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError("`input_ids` must be an integer tensor of shape (batch, length >= 1), e.g. "
                         "`teacher.class_prompt(labels)`.")
    if input_ids.dim() != 2 or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
        raise ValueError(f"`input_ids` must have shape (batch, length >= 1), got {tuple(input_ids.shape)}.")
    if not isinstance(do_sample, bool):
        raise ValueError(f"`do_sample` must be True or False, got {do_sample!r}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}.")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer or None, got {top_k!r}.")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0
    ):
        raise ValueError(f"`top_p` must be in (0, 1] or None, got {top_p!r}.")
    if cfg_scale is not None and (
        isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)) or not math.isfinite(cfg_scale)
    ):
        raise ValueError(f"`cfg_scale` must be a finite number or None, got {cfg_scale!r}.")
    if cfg_scale not in (None, 1.0) and config.num_classes == 0:
        raise ValueError("`cfg_scale` needs a class-conditional model (num_classes > 0).")
    if max_new_tokens is not None and (not _is_int(max_new_tokens) or max_new_tokens < 1):
        raise ValueError(f"`max_new_tokens` must be an integer >= 1, got {max_new_tokens!r}.")
    model.check_prompt(input_ids, max_new_tokens)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
        if generator.device.type != input_ids.device.type:
            raise ValueError(f"`generator` is on {generator.device} but `input_ids` on {input_ids.device}: "
                             f"use torch.Generator(device={str(input_ids.device)!r}).")
    new_tokens = max_new_tokens if max_new_tokens is not None else config.max_position_embeddings - input_ids.shape[1]
    if new_tokens < 1:
        raise ValueError("`input_ids` already fills the token grid: there is nothing left to generate.")
    return new_tokens


VERIFICATIONS = ("token", "block")


def _check_speculative_arguments(teacher, draft, gamma, relaxed_neighbours, mode, verification="token") -> None:
    check_draft_matches(teacher, draft)
    if verification not in VERIFICATIONS:
        raise ValueError(f"`verification` must be one of {', '.join(VERIFICATIONS)}, got {verification!r}.")
    if verification == "block" and relaxed_neighbours is not None:
        raise ValueError("`relaxed_neighbours` (lossy) and `verification='block'` cannot be combined.")
    grid = teacher.config.num_image_tokens
    if not _is_int(gamma) or not 1 <= gamma <= grid:
        raise ValueError(f"`gamma` must be an integer in [1, {grid}] (the {grid}-token grid), got {gamma!r}.")
    K = teacher.config.codebook_size
    if relaxed_neighbours is not None and (
        not isinstance(relaxed_neighbours, torch.Tensor) or relaxed_neighbours.dim() != 2
        or relaxed_neighbours.shape[0] != K
    ):
        raise ValueError(f"`relaxed_neighbours` must be a ({K}, k) table from `latent_neighbours`.")
    resolve_mode(mode, next(teacher.parameters()).device)


# -- decoders, built once per setting and reused ----------------------------------------------------------------

_DECODERS: "OrderedDict[tuple, SpeculativeDecoder]" = OrderedDict()
MAX_CACHED_DECODERS = 8


def get_decoder(teacher, draft, gamma: int, batch_size: int, sampling: SamplingConfig, mode: str = "auto",
                relaxed_neighbours: torch.Tensor | None = None) -> SpeculativeDecoder:
    """The `SpeculativeDecoder` for this setting, built on first use and kept (the last `MAX_CACHED_DECODERS`),
    so that later calls replay its compiled rounds or CUDA graphs. `clear_decoders()` frees them."""
    key = (id(teacher), id(draft), gamma, batch_size, sampling, mode,
           None if relaxed_neighbours is None else id(relaxed_neighbours))
    decoder = _DECODERS.get(key)
    if decoder is not None and decoder.teacher is teacher and decoder.draft is draft and (
        relaxed_neighbours is None or decoder.relaxed_neighbours is relaxed_neighbours
    ):
        _DECODERS.move_to_end(key)
        return decoder
    decoder = SpeculativeDecoder(teacher, draft, gamma, batch_size, sampling, mode, relaxed_neighbours)
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
            `(1 - a^(g+1)) / ((1 - a)(g c + 1))` for the running acceptance `a` and cost ratio `c`.
        cost_ratio: `c` = draft step time / verify pass time; calibrated once per decoder when None.
        relaxed_neighbours: LOSSY, off by default. A `(K, k)` table from `latent_neighbours(codebook, k)`: accept
            a drafted code with the teacher's mass on its latent neighbours (`relaxed_accept`). Faster, but the
            output is no longer the teacher's distribution.
        mode: the engine's execution mode: `auto` (CUDA graphs on a GPU, eager on the CPU), `eager`, `compile`,
            `cuda-graph` (see `SpeculativeDecoder`).
        verification: `token` (Leviathan et al., `speculative_accept`) or `block` (Sun et al. 2025,
            `block_accept`: the draft block verified jointly, never fewer tokens in expectation). Both are lossless.
            With `block`, `alpha` counts the accepted prefix like `token` but no longer estimates `sum min(p, q)`.
    """
    new_tokens = check_sampling_arguments(teacher, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p,
                                          cfg_scale, generator)
    _check_speculative_arguments(teacher, draft, gamma, relaxed_neighbours, mode, verification)
    if cost_ratio is not None and not (isinstance(cost_ratio, (int, float)) and cost_ratio >= 0):
        raise ValueError(f"`cost_ratio` must be a number >= 0 or None, got {cost_ratio!r}.")
    sampling = SamplingConfig(do_sample, float(temperature), top_k, top_p, cfg_scale, verification)
    decoder = get_decoder(teacher, draft, gamma, input_ids.shape[0], sampling, mode, relaxed_neighbours)
    record = decoder.generate(input_ids, new_tokens, generator, adaptive_gamma, cost_ratio)
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
) -> torch.LongTensor:
    """Autoregressive sampling of `model` (a VQGPT or `EarlyExitDraft`) after `input_ids` `(B, P)`: the decoding
    engine with no draft, so the baseline runs exactly the machinery (caches, graphs) the speculative sampler runs.

    Distributed exactly as `model.generate(input_ids, do_sample=..., temperature=..., top_k=..., top_p=...,
    cfg_scale=...)`. Returns `(B, P + max_new_tokens)`.
    """
    new_tokens = check_sampling_arguments(model, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p,
                                          cfg_scale, generator)
    resolve_mode(mode, input_ids.device)
    sampling = SamplingConfig(do_sample, float(temperature), top_k, top_p, cfg_scale)
    decoder = get_decoder(model, None, 0, input_ids.shape[0], sampling, mode)
    return decoder.generate(input_ids, new_tokens, generator)["sequences"]
