from .cache import RaggedCache, ragged_causal_mask, ragged_positions
from .decoding import EarlyExitDraft, SpeculativeOutput, speculative_sample
from .sampling import (
    acceptance_alpha,
    choose_gamma,
    expected_speedup,
    greedy_accept,
    latent_neighbours,
    relaxed_accept,
    speculative_accept,
    warp_logits,
)
from .generate import speculative_generate
from .plain import plain_sample
