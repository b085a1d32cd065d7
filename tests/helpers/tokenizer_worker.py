"""A tiny tokenizer training on the shared loop, for the distributed test.

    python tests/helpers/tokenizer_worker.py OUT_DIR MAX_STEPS

Writes each rank's parameter sums to OUT_DIR/tokenizer-rank<r>.json.
"""

import json
import os
import sys

from accelerate.state import PartialState

from hf_specdec.data import DataArguments
from hf_specdec.training import TrainingArguments
from hf_specdec.training.tokenizer import TokenizerArguments, train_tokenizer


def main():
    out_dir, max_steps = sys.argv[1], int(sys.argv[2])
    model_args = TokenizerArguments(codebook_size=16, block_out_channels=[32, 32], latent_channels=8, vq_embed_dim=8)
    args = TrainingArguments(output_dir=out_dir, max_steps=max_steps, per_device_batch_size=8, learning_rate=2e-3,
                             warmup_steps=1, eval_every=0, save_every=0, log_every=1)
    tokenizer = train_tokenizer(DataArguments(resolution=8), model_args, args)
    sums = {name: float(p.detach().double().sum()) for name, p in tokenizer.named_parameters()}
    with open(os.path.join(out_dir, f"tokenizer-rank{PartialState().process_index}.json"), "w") as f:
        json.dump(sums, f)


if __name__ == "__main__":
    main()
