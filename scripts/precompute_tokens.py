#!/usr/bin/env python
"""Encode a dataset's images to VQ codes once, cached by fingerprint (the seed's precompute_tokens.py).

    python scripts/precompute_tokens.py configs/data/digits.yaml [--tokenizer_path PATH]

Training scripts call the same cached step, so running this first is optional; it prints codebook statistics.
"""

from dataclasses import dataclass, field

from hf_specdec.cli import parse_args, run
from hf_specdec.data import DataArguments, token_splits
from hf_specdec.hub import load_pretrained
from hf_specdec.models import VQTokenizer


@dataclass
class TokenizerPath:
    tokenizer_path: str = field(default="checkpoints/digits/vq-tokenizer", metadata={"help": "Trained VQTokenizer folder."})


def main(argv=None):
    data_args, paths = parse_args((DataArguments, TokenizerPath), argv, description=__doc__)
    tokenizer = load_pretrained(VQTokenizer, paths.tokenizer_path, "tokenizer_path")
    for name, split in token_splits(data_args, tokenizer).items():
        stats = tokenizer.codebook_usage(split[:]["codes"])
        print(f"{name}: {len(split)} images, codebook usage {stats['usage']:.1%}, perplexity {stats['perplexity']:.1f}")
    print(f"cache: {data_args.token_cache_dir}")


if __name__ == "__main__":
    run(main)
