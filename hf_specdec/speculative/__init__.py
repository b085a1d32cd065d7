from .cache import RaggedCache, ragged_causal_mask, ragged_positions
from .custom_generate import speculative_generate
from .decoding import (
    EarlyExitDraft,
    SpeculativeOutput,
    check_draft_matches,
    check_sampling_arguments,
    clear_decoders,
    get_decoder,
    plain_sample,
    speculative_sample,
)
from .engine import SamplingConfig, SpeculativeDecoder
from .sampling import (
    acceptance_alpha,
    block_accept,
    choose_gamma,
    expected_speedup,
    greedy_accept,
    latent_neighbours,
    relaxed_accept,
    speculative_accept,
    warp_logits,
)
