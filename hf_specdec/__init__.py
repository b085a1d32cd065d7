"""hf-specdec: fast, lossless speculative decoding for autoregressive image generation on the HF stack."""

from .models import STUDENT_IDS, VQGPT_PRESETS, VQGPTConfig, VQGPTFeatureDraft, VQGPTForCausalLM, VQGPTModel
from .speculative import (
    EarlyExitDraft,
    RaggedCache,
    SpeculativeDecoder,
    SpeculativeOutput,
    plain_sample,
    speculative_generate,
    speculative_sample,
)


__version__ = "0.1.0.dev0"


def __getattr__(name: str):
    # The tokenizers import diffusers: loaded on first use (see `hf_specdec.models`), not by `import hf_specdec`.
    if name in ("PaletteTokenizer", "VQTokenizer"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
