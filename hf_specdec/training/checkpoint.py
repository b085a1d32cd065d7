"""Resumable training checkpoints in safetensors and JSON only: nothing here is pickled or unpickled.

A checkpoint folder `checkpoint-<step>` holds `model.safetensors`, `optimizer.safetensors` (+ its
`optimizer.json`), one `rng-<rank>.safetensors` per process and `trainer_state.json` (step, scheduler, Python and
NumPy random states). It is written under a temporary name and renamed when complete, so a run killed while
saving never leaves a half-written `checkpoint-<step>` behind.
"""

import json
import os
import random
import re
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def optimizer_state_to_tensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into safetensors-ready tensors and JSON metadata."""
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            key = f"{param_id}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], metadata: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(metadata["scalars"].items()):
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": metadata["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return tensors


def _python_numpy_rng() -> dict:
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _restore_python_numpy_rng(saved: dict) -> None:
    version, state, gauss = saved["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(accelerator, model, optimizer, scheduler, step: int, checkpoints_dir: str, total_limit: int | None):
    """Write `checkpoints_dir/checkpoint-<step>` atomically; keep at most `total_limit` checkpoints."""
    final = os.path.join(checkpoints_dir, f"checkpoint-{step}")
    tmp = os.path.join(checkpoints_dir, f".tmp-checkpoint-{step}")
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP/DeepSpeed: every rank calls it
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    save_file(_rng_tensors(), os.path.join(tmp, f"rng-{accelerator.process_index}.safetensors"))
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, os.path.join(tmp, "model.safetensors"))
        tensors, metadata = optimizer_state_to_tensors(optimizer.state_dict())
        save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
        with open(os.path.join(tmp, "optimizer.json"), "w") as f:
            json.dump(metadata, f)
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump({"global_step": step, "scheduler": scheduler.state_dict(), "rng": _python_numpy_rng()}, f)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(checkpoints_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(checkpoints_dir: str) -> list[str]:
    """Complete checkpoints in `checkpoints_dir`, oldest first."""
    if not os.path.isdir(checkpoints_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(checkpoints_dir) if (m := CHECKPOINT_PATTERN.match(name))]
    return [os.path.join(checkpoints_dir, name) for _, name in sorted(found)]


def resolve_checkpoint(resume_from_checkpoint: str | None, checkpoints_dir: str) -> str | None:
    """`"latest"` -> the newest checkpoint (None if there is none yet); a path -> that path; None -> None."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(checkpoints_dir)
        return found[-1] if found else None
    if not os.path.isfile(os.path.join(resume_from_checkpoint, "trainer_state.json")):
        raise ValueError(f"`resume_from_checkpoint` {resume_from_checkpoint!r} is not a checkpoint folder.")
    return resume_from_checkpoint


def load_checkpoint(accelerator, model, optimizer, scheduler, path: str) -> int:
    """Restore model, optimizer, scheduler and random states from `path`; returns the global step."""
    accelerator.unwrap_model(model).load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    with open(os.path.join(path, "optimizer.json")) as f:
        metadata = json.load(f)
    tensors = load_file(os.path.join(path, "optimizer.safetensors"), device=str(accelerator.device))
    optimizer.load_state_dict(optimizer_state_from_tensors(tensors, metadata))
    with open(os.path.join(path, "trainer_state.json")) as f:
        state = json.load(f)
    scheduler.load_state_dict(state["scheduler"])
    _restore_python_numpy_rng(state["rng"])
    rng_file = os.path.join(path, f"rng-{accelerator.process_index}.safetensors")
    if os.path.exists(rng_file):
        rng = load_file(rng_file)
        torch.set_rng_state(rng["torch"])
        cuda_states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
    return int(state["global_step"])
