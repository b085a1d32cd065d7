"""Checkpoint and resume under FSDP2 on 2 CPU processes (gloo), for `test_sharded_optimizer_state_resumes_exactly`.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/helpers/fsdp_checkpoint_worker.py OUT_DIR

Accelerate sets up FSDP only on accelerators (a CPU run becomes MULTI_CPU, i.e. DDP), so the model is sharded here
with torch's own `fully_shard`, as Accelerate's FSDP2 plugin does on GPUs, and the project's `save_checkpoint` /
`load_checkpoint` run unchanged. Trains 8 steps with a checkpoint at step 4; then, in the same processes, a freshly
initialised sharded model and optimizer resume from it and train steps 4-8 again; and a control resumes but loses
the optimizer's moments (what a checkpoint without the full optimizer state gives). Last, the trained model is
gathered for `save_pretrained` as the trainer does at the end (`unsharded_model`). Writes OUT_DIR/result.json.
"""

import json
import os
import sys

import torch
from accelerate import Accelerator
from safetensors import safe_open
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from hf_specdec import VQGPTConfig, VQGPTForCausalLM
from hf_specdec.training.checkpoint import load_checkpoint, save_checkpoint, unsharded_model
from hf_specdec.training.trainer import cosine_schedule_with_warmup

STEPS, SAVE_AT = 8, 4


def main():
    out_dir = sys.argv[1]
    accelerator = Accelerator(cpu=True)  # MULTI_CPU: the gloo process group; the sharding is done below
    rank, world = accelerator.process_index, accelerator.num_processes
    mesh = init_device_mesh("cpu", (world,))
    config = VQGPTConfig(codebook_size=16, num_classes=3, grid_h=2, grid_w=2, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, dropout=0.0)
    g = torch.Generator().manual_seed(1)
    batches = torch.cat([16 + torch.randint(0, 3, (STEPS, world, 4, 1), generator=g),
                         torch.randint(0, 16, (STEPS, world, 4, 4), generator=g)], dim=-1)

    def build(seed):
        torch.manual_seed(seed)
        model = VQGPTForCausalLM(config)
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01)
        return model, optimizer, cosine_schedule_with_warmup(optimizer, 2, STEPS, 0.1)

    def train(model, optimizer, scheduler, start):
        for step in range(start, STEPS):
            ids = batches[step, rank]  # each rank its own data: the gradients are reduced across ranks
            model(ids, labels=ids, use_cache=False).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if step + 1 == SAVE_AT and start == 0:
                save_checkpoint(accelerator, model, optimizer, scheduler, SAVE_AT, os.path.join(out_dir, "checkpoints"), None)

    def checksum(model):
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sum(float(v.double().sum()) * (i + 1) for i, v in enumerate(state.values()))  # rank 0 only; 0 elsewhere

    model, optimizer, scheduler = build(seed=0)
    train(model, optimizer, scheduler, 0)
    straight = checksum(model)
    exp_avg = optimizer.state_dict()["state"][0]["exp_avg"]
    sharded = {"type": type(exp_avg).__name__, "local_rows": exp_avg.to_local().shape[0], "rows": exp_avg.shape[0]}

    path = os.path.join(out_dir, "checkpoints", f"checkpoint-{SAVE_AT}")
    resumed, resumed_optimizer, resumed_scheduler = build(seed=123)  # other initial weights: all must come from disk
    step = load_checkpoint(accelerator, resumed, resumed_optimizer, resumed_scheduler, path)
    train(resumed, resumed_optimizer, resumed_scheduler, step)

    weights_only, fresh_optimizer, scheduler_only = build(seed=123)
    load_checkpoint(accelerator, weights_only, fresh_optimizer, scheduler_only, path)
    fresh_optimizer.state.clear()  # the control: weights, schedule and learning rate resumed, Adam's moments lost
    train(weights_only, fresh_optimizer, scheduler_only, SAVE_AT)
    results = {"straight": checksum(model), "resumed": checksum(resumed), "weights_only": checksum(weights_only),
               "step": step, "sharded": sharded}
    final = unsharded_model(accelerator, model)  # what the trainer hands to save_pretrained
    if rank == 0:
        final.save_pretrained(os.path.join(out_dir, "final"))
        reloaded = VQGPTForCausalLM.from_pretrained(os.path.join(out_dir, "final"))
        results["final"] = {"plain": not any(type(p).__name__ == "DTensor" for p in final.parameters()),
                            "checksum": sum(float(v.double().sum()) * (i + 1)
                                            for i, v in enumerate(reloaded.state_dict().values()))}
    assert results["straight"] == straight
    if rank == 0:
        with safe_open(os.path.join(path, "optimizer.safetensors"), "pt") as f:
            results["saved_shapes"] = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
        results["param_shapes"] = {name: list(p.shape) for name, p in model.named_parameters()}
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(results, f)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
