from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_vqgpt import STUDENT_IDS, VQGPT_PRESETS, VQGPTConfig
from .modeling_vqgpt import VQGPTForCausalLM, VQGPTModel


AutoConfig.register(VQGPTConfig.model_type, VQGPTConfig)
AutoModelForCausalLM.register(VQGPTConfig, VQGPTForCausalLM)
from .palette_tokenizer import PaletteTokenizer
from .vq_tokenizer import EMAVectorQuantizer, VQTokenizer, codebook_statistics
