#!/usr/bin/env python
"""Train the VQ tokenizer (diffusers VQModel + EMA codebook) on images.

    accelerate launch scripts/train_vqvae.py configs/vqvae/digits.yaml [--max_steps N ...]

Writes the tokenizer (safetensors + config.json) and reconstructions.png to --output_dir.
"""

from hf_specdec.cli import parse_args, run
from hf_specdec.data import DataArguments
from hf_specdec.training import TrainingArguments
from hf_specdec.training.tokenizer import TokenizerArguments, train_tokenizer


def main(argv=None):
    data_args, model_args, training_args = parse_args(
        (DataArguments, TokenizerArguments, TrainingArguments), argv, description=__doc__,
        unread={"token_cache_dir": "the tokenizer trains on images, not on cached tokens"}
    )
    train_tokenizer(data_args, model_args, training_args)


if __name__ == "__main__":
    run(main)
