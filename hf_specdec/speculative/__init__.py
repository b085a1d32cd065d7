from .cache import RaggedCache
from .custom_generate import speculative_generate
from .checks import check_draft_matches, check_sampling_arguments
from .decoding import EarlyExitDraft, SpeculativeOutput, clear_decoders, get_decoder, plain_sample, pooled_statistics, speculative_sample
from .engine import SpeculativeDecoder
from .sampling import (
    SamplingConfig,
    acceptance_alpha,
    block_accept,
    choose_gamma,
    expected_speedup,
    greedy_accept,
    latent_neighbours,
    multi_draft_accept,
    relaxed_accept,
    speculative_accept,
    warp_logits,
)
