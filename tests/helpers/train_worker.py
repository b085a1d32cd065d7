"""A tiny training run on the shared loop, for the distributed and kill/resume tests.

    python tests/helpers/train_worker.py OUT_DIR MAX_STEPS SAVE_EVERY [resume] [sleep_seconds]

Logs a hash of every optimizer step's batch and a draw of the process's random stream (which dropout also reads) to
OUT_DIR/batches-rank<r>.jsonl and, at the end, the world size and a checksum of the parameters to
OUT_DIR/params-rank<r>.json.
"""

import hashlib
import json
import os
import sys
import time

import torch

from hf_specdec import VQGPTConfig, VQGPTForCausalLM
from hf_specdec.training import TrainingArguments, make_accelerator, train


def main():
    out_dir, max_steps, save_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    resume = len(sys.argv) > 4 and sys.argv[4] == "resume"
    sleep = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    args = TrainingArguments(
        output_dir=out_dir, max_steps=max_steps, save_every=save_every, per_device_batch_size=4, warmup_steps=2,
        eval_every=0, log_every=1, learning_rate=1e-3, resume_from_checkpoint="latest" if resume else None,
        checkpoints_total_limit=3, seed=0,
    )
    accelerator = make_accelerator(args)
    torch.manual_seed(0)
    config = VQGPTConfig(codebook_size=16, num_classes=3, grid_h=2, grid_w=2, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, dropout=0.1)
    model = VQGPTForCausalLM(config)
    g = torch.Generator().manual_seed(1)
    data = torch.cat([16 + torch.randint(0, 3, (40, 1), generator=g), torch.randint(0, 16, (40, 4), generator=g)], 1)
    rank = accelerator.process_index
    log_path = os.path.join(out_dir, f"batches-rank{rank}.jsonl")

    def loss_fn(model, ids, step):
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": step, "batch": hashlib.sha1(ids.cpu().numpy().tobytes()).hexdigest(),
                                "noise": torch.rand(()).item()}) + "\n")
        time.sleep(sleep)
        return model(ids, labels=ids, use_cache=False).loss, {}

    trained = train(model, list(data), loss_fn, args, accelerator, collate_fn=torch.stack)
    checksum = sum(float(p.detach().double().sum()) * (i + 1) for i, p in enumerate(trained.parameters()))
    with open(os.path.join(out_dir, f"params-rank{rank}.json"), "w") as f:
        json.dump({"world_size": accelerator.num_processes, "checksum": checksum,
                   "distributed_type": str(accelerator.distributed_type)}, f)


if __name__ == "__main__":
    main()
