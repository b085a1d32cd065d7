"""hf-specdec: fast, lossless speculative decoding for autoregressive image generation on the HF stack."""

from .models import (
    STUDENT_IDS,
    VQGPT_PRESETS,
    PaletteTokenizer,
    VQGPTConfig,
    VQGPTForCausalLM,
    VQGPTModel,
    VQTokenizer,
)
from .speculative import EarlyExitDraft, RaggedCache, SpeculativeOutput, speculative_generate, speculative_sample


__version__ = "0.1.0.dev0"
