import importlib

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_vqgpt import STUDENT_IDS, VQGPT_PRESETS, VQGPTConfig
from .modeling_feature_draft import VQGPTFeatureDraft, VQGPTFeatureDraftConfig, make_feature_draft
from .modeling_vqgpt import VQGPTForCausalLM, VQGPTModel


AutoConfig.register(VQGPTConfig.model_type, VQGPTConfig)
AutoModelForCausalLM.register(VQGPTConfig, VQGPTForCausalLM)
AutoModel.register(VQGPTConfig, VQGPTModel)  # the trunk: hidden states without the head
AutoConfig.register(VQGPTFeatureDraftConfig.model_type, VQGPTFeatureDraftConfig)

# The tokenizers are diffusers models: imported on first use (a module `__getattr__`, as transformers' lazy
# modules do), so that importing the GPT and the sampler does not import diffusers.
_LAZY = {
    "EMAVectorQuantizer": "vq_tokenizer",
    "PaletteTokenizer": "palette_tokenizer",
    "VQTokenizer": "vq_tokenizer",
    "codebook_statistics": "vq_tokenizer",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["STUDENT_IDS", "VQGPT_PRESETS", "VQGPTConfig", "VQGPTFeatureDraft", "VQGPTFeatureDraftConfig",
           "VQGPTForCausalLM", "VQGPTModel", "make_feature_draft", *_LAZY]
