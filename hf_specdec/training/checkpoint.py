"""Resumable training checkpoints in safetensors and JSON only: nothing here is pickled or unpickled.

A checkpoint folder `checkpoint-<step>` holds `model.safetensors`, `optimizer.safetensors` (+ its
`optimizer.json`), one `rng-<rank>.safetensors` per process and `trainer_state.json` (step, scheduler, Python and
NumPy random states). It is written under a temporary name and renamed when complete, so a run killed while
saving never leaves a half-written `checkpoint-<step>` behind.

Model and optimizer state are saved *full* (unsharded), keyed by parameter name, through
`torch.distributed.checkpoint.state_dict`: under FSDP every rank takes part in gathering the shards and rank 0
writes them; on resume every rank reads the full state and keeps its own shard. So a checkpoint does not depend on
the number of processes or on how the model is wrapped (one process, DDP or FSDP); the same files resume any of
them. DeepSpeed partitions the optimizer inside its own engine, whose checkpoints are pickles: `save_checkpoint`
refuses it (see `check_checkpointing_supported`).

`resolve_checkpoint("latest")` skips a damaged newest checkpoint (a truncated file, e.g. a disk that filled up or
a copy cut short) with a warning and resumes from the newest intact one: the data order is a function of the step,
so the steps after it are retrained exactly as before.
"""

import json
import os
import random
import re
import shutil
import warnings

import numpy as np
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..models.configuration_vqgpt import _is_int
from ..models.safetensors_only import damaged_safetensors

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "optimizer.json", "trainer_state.json")
FORMAT_VERSION = 2  # 2: optimizer state keyed by parameter name; 1 (no "version" key): by parameter index
_FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)  # the gathered state, on rank 0 only
_FULL = StateDictOptions(full_state_dict=True)  # every rank passes the full state; each keeps its shard


def optimizer_state_to_tensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict (`{"state": {key: {name: value}}, "param_groups": [...]}`, keys parameter
    names or indices) into safetensors-ready tensors `"<key>/<name>"` and JSON metadata."""
    tensors, scalars = {}, {}
    for key, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{key}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{key}/{name}"] = value
    return tensors, {"version": FORMAT_VERSION, "param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], metadata: dict) -> dict:
    """The inverse of `optimizer_state_to_tensors`."""
    state: dict = {}
    if metadata.get("version", 1) == 1:  # written before FORMAT_VERSION 2: "<index>.<name>"
        for key, value in list(tensors.items()) + list(metadata["scalars"].items()):
            param_id, name = key.split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
    else:
        for key, value in list(tensors.items()) + list(metadata["scalars"].items()):
            param, name = key.rsplit("/", 1)
            state.setdefault(param, {})[name] = value
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


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the torch one


def check_checkpointing_supported(accelerator) -> None:
    """Raise `ValueError` where these checkpoints cannot be resumed correctly: under DeepSpeed, whose engine keeps
    the optimizer state partitioned in its own (pickled) format."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ValueError(
            "`save_every` / `resume_from_checkpoint` are not supported under DeepSpeed: its engine keeps the optimizer "
            "state partitioned in its own pickled checkpoint format. Train with FSDP "
            "(configs/accelerate/fsdp.yaml) or DDP to checkpoint, or set `save_every` 0."
        )


# The training settings that the saved optimizer state, schedule position and data order depend on: a resumed run
# must ask for the same ones (the optimizer's saved learning rate would otherwise silently win over a new one).
RESUME_SETTINGS = ("learning_rate", "per_device_batch_size", "gradient_accumulation_steps", "warmup_steps", "min_lr_ratio",
                   "weight_decay", "adam_beta1", "adam_beta2", "seed")


# Fields of a script's other dataclasses (data, model, distillation) that do not change what is trained: folders a
# run may find elsewhere when resumed, and evaluation-only sizes. Every other field is recorded and compared.
RESUME_IGNORED = ("data_dir", "token_cache_dir", "tokenizer_path", "teacher_path", "num_alpha_prefixes",
                  "num_entropy_samples")


def resume_settings(training_args, run_config: dict | None = None) -> dict:
    """What a checkpoint records for `check_resume_settings`: the trainer's `RESUME_SETTINGS` and, named
    `<group>.<field>`, every field of `run_config`'s groups (`{"data": vars(data_args), "distill": vars(args)}`)
    except `RESUME_IGNORED`; as JSON gives them back (tuples as lists)."""
    settings = {key: getattr(training_args, key) for key in RESUME_SETTINGS}
    for group, fields in (run_config or {}).items():
        if isinstance(fields, dict):
            settings.update({f"{group}.{key}": value for key, value in fields.items() if key not in RESUME_IGNORED})
    return json.loads(json.dumps(settings, default=str))


def check_resume_settings(path: str, settings: dict, max_steps: int, num_processes: int = 1) -> None:
    """Raise `ValueError` before any work when resuming from the checkpoint `path` cannot give the run asked for:
    `max_steps` below the checkpoint's step, another number of processes than wrote it (a step's place in the data,
    `step * accumulation` batches of `per_device_batch_size * num_processes` examples, and the batch of every later
    step depend on it: the resumed run would retrain some examples and skip others), or a recorded setting
    (`resume_settings`: the trainer's, the data's, the model's or the distillation's) other than the checkpoint's,
    each named with both values. Checkpoints written before the settings were recorded are compared by step (and
    processes) only; settings a checkpoint did not record, not at all."""
    with open(os.path.join(path, "trainer_state.json")) as f:
        state = json.load(f)
    step = state["global_step"]
    if max_steps < step:
        raise ValueError(f"`max_steps` {max_steps} is below the step of `resume_from_checkpoint` {path!r} ({step}): "
                         "raise `max_steps` to train on, or give another `output_dir` to start a new run.")
    saved_processes = state.get("num_processes")
    if saved_processes is not None and saved_processes != num_processes:
        raise ValueError(f"`resume_from_checkpoint` {path!r} was written by a run on {saved_processes} process(es), "
                         f"this one has {num_processes}: resume with `accelerate launch --num_processes "
                         f"{saved_processes}` (its data order and batch per step depend on it), or start a new run in "
                         "another `output_dir`.")
    saved = state.get("settings")
    if not isinstance(saved, dict):
        return
    # The kind of run is in its groups of settings (a teacher run's `model.*`, a distillation's `distill.*`): the
    # groups of two kinds never meet, and their trainer settings may well agree.
    kind = lambda keys: sorted({key.split(".")[0] for key in keys} & {"model", "distill", "tokenizer"})  # noqa: E731
    if kind(saved) and kind(settings) and kind(saved) != kind(settings):
        raise ValueError(f"`resume_from_checkpoint` {path!r} was written by another kind of run (its settings: "
                         f"{', '.join(kind(saved))}; this run's: {', '.join(kind(settings))}): its weights are not "
                         "this run's model. Give another `output_dir`.")
    changed = [f"`{key.split('.')[-1]}` {settings[key]!r} (the checkpoint's: {saved[key]!r})" for key in settings
               if key in saved and saved[key] != settings[key]]
    if changed:
        raise ValueError(f"`resume_from_checkpoint` {path!r} was trained with other settings: {', '.join(changed)}. "
                         "Resume with the checkpoint's values (its optimizer state, schedule and data order depend on "
                         "them), or give another `output_dir` to start a new run with these.")


def save_checkpoint(accelerator, model, optimizer, scheduler, step: int, checkpoints_dir: str, total_limit: int | None,
                    settings: dict | None = None):
    """Write `checkpoints_dir/checkpoint-<step>` atomically; keep at most `total_limit` checkpoints. `settings` (the
    run's `resume_settings`) are recorded for `check_resume_settings`.

    Every rank must call it: under FSDP, model and optimizer states are gathered from all ranks (rank 0 writes).
    """
    check_checkpointing_supported(accelerator)
    final = os.path.join(checkpoints_dir, f"checkpoint-{step}")
    tmp = os.path.join(checkpoints_dir, f".tmp-checkpoint-{step}")
    # Collectives under FSDP: every rank calls them; the full states land on rank 0 (in CPU memory).
    model_state = get_model_state_dict(model, options=_FULL_ON_RANK0)
    optimizer_state = get_optimizer_state_dict(model, _torch_optimizer(optimizer), options=_FULL_ON_RANK0)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    save_file(_rng_tensors(), os.path.join(tmp, f"rng-{accelerator.process_index}.safetensors"))
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, os.path.join(tmp, "model.safetensors"))
        tensors, metadata = optimizer_state_to_tensors(optimizer_state)
        save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
        with open(os.path.join(tmp, "optimizer.json"), "w") as f:
            json.dump(metadata, f)
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump({"global_step": step, "scheduler": scheduler.state_dict(), "rng": _python_numpy_rng(),
                       "num_processes": accelerator.num_processes, "settings": settings or {}}, f)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(checkpoints_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def unsharded_model(accelerator, model) -> torch.nn.Module | None:
    """The trained model as one plain module on the main process, for `save_pretrained` and reports; None elsewhere.

    Without sharding, the unwrapped model itself. Under FSDP (parameters are `DTensor` shards) every rank must call
    it: the full weights are gathered, and the main process gets a new instance of the model's class, built from its
    config (`cls(config)` for transformers models, `cls.from_config(config)` for diffusers ones), holding them."""
    from torch.distributed.tensor import DTensor

    unwrapped = accelerator.unwrap_model(model)
    if not any(isinstance(p, DTensor) for p in unwrapped.parameters()):
        return unwrapped if accelerator.is_main_process else None
    state = get_model_state_dict(model, options=_FULL_ON_RANK0)
    if not accelerator.is_main_process:
        return None
    cls = type(unwrapped)
    plain = cls.from_config(unwrapped.config) if hasattr(cls, "from_config") else cls(unwrapped.config)
    plain.load_state_dict(state)
    return plain.train(unwrapped.training)


def list_checkpoints(checkpoints_dir: str) -> list[str]:
    """Complete checkpoints in `checkpoints_dir`, oldest first."""
    if not os.path.isdir(checkpoints_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(checkpoints_dir) if (m := CHECKPOINT_PATTERN.match(name))]
    return [os.path.join(checkpoints_dir, name) for _, name in sorted(found)]


def checkpoint_problems(path: str) -> list[str]:
    """What makes the checkpoint folder `path` unusable (missing, truncated or unreadable files); empty if intact.

    Reads the JSON files and the safetensors headers (which must cover their files), not the tensors."""
    if not os.path.isdir(path):
        return [f"{path} is not a folder"]
    problems = [f"{os.path.join(path, name)} is missing" for name in CHECKPOINT_FILES
                if not os.path.isfile(os.path.join(path, name))]
    problems += damaged_safetensors(path)
    for name, check in (("optimizer.json", _optimizer_json_problem), ("trainer_state.json", _trainer_state_problem)):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            try:
                with open(file) as f:
                    problem = check(json.load(f))
            except (OSError, ValueError) as error:
                problem = str(error)
            if problem:
                problems.append(f"{file} ({problem})")
    return problems


def _json_kind(value) -> str:
    """How JSON calls the kind of a parsed value: null, a boolean, a number, a string, an array, an object."""
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "an array"), (dict, "an object"))
    return next((kind for types, kind in kinds if isinstance(value, types)), type(value).__name__)


def _optimizer_json_problem(metadata) -> str | None:
    """What is wrong with the parsed `optimizer.json` (what `optimizer_state_to_tensors` writes), or None."""
    if not isinstance(metadata, dict):
        return f"holds {_json_kind(metadata)}, not an object with param_groups and scalars"
    version = metadata.get("version", 1)
    if not _is_int(version) or version not in (1, FORMAT_VERSION):
        return f"version {version!r} is not one this code reads (1 or {FORMAT_VERSION})"
    groups = metadata.get("param_groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                                             for g in groups):
        return "param_groups is missing or not a list of parameter groups with their params"
    scalars = metadata.get("scalars")
    if not isinstance(scalars, dict):
        return "scalars is missing or not an object"
    separator = "." if version == 1 else "/"
    bad = [key for key in scalars if separator not in key]
    if bad:
        return f"scalars key {bad[0]!r} is not '<parameter>{separator}<name>'"
    return None


def _trainer_state_problem(state) -> str | None:
    """What is wrong with the parsed `trainer_state.json` (what `save_checkpoint` writes), or None."""
    if not isinstance(state, dict):
        return f"holds {_json_kind(state)}, not an object with global_step, scheduler and rng"
    missing = [key for key in ("global_step", "scheduler", "rng") if key not in state]
    if missing:
        return f"has no {', '.join(missing)}"
    step = state["global_step"]
    if not _is_int(step) or step < 0:
        return f"global_step must be an integer >= 0, got {step!r}"
    if not isinstance(state["scheduler"], dict):
        return f"scheduler must be an object (the scheduler's state), got {_json_kind(state['scheduler'])}"
    rng = state["rng"]
    if not (isinstance(rng, dict) and isinstance(rng.get("python"), list) and len(rng["python"]) == 3
            and isinstance(rng["python"][1], list) and isinstance(rng.get("numpy"), list) and len(rng["numpy"]) == 5
            and isinstance(rng["numpy"][1], list)):
        return "rng must hold the Python ([version, state, gauss]) and NumPy (5 fields) random states"
    return None


def resolve_checkpoint(resume_from_checkpoint: str | None, checkpoints_dir: str) -> str | None:
    """`"latest"` -> the newest intact checkpoint (None if there is none yet); a path -> that path; None -> None.

    `"latest"` skips damaged checkpoints with a warning (the older one retrains the steps after it exactly) and raises
    `ValueError` if every checkpoint is damaged; a damaged or missing path raises `ValueError` naming the file.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(checkpoints_dir)
        skipped = []
        for path in reversed(found):
            problems = checkpoint_problems(path)
            if not problems:
                if skipped:
                    warnings.warn(f"Skipping damaged checkpoint(s) {'; '.join(skipped)}. Resuming from {path} instead: "
                                  "the steps after it are trained again.", stacklevel=2)
                return path
            skipped.append(f"{path}: {', '.join(problems)}")
        if skipped:
            raise ValueError(f"`resume_from_checkpoint` latest: every checkpoint in {checkpoints_dir!r} is damaged "
                             f"({'; '.join(skipped)}). Delete them to start over.")
        return None
    problems = checkpoint_problems(resume_from_checkpoint)
    if problems:
        raise ValueError(f"`resume_from_checkpoint` {resume_from_checkpoint!r} is not a usable checkpoint: "
                         f"{', '.join(problems)}. Resume from an older checkpoint (`latest` skips damaged ones) "
                         "or delete this one.")
    return resume_from_checkpoint


def load_checkpoint(accelerator, model, optimizer, scheduler, path: str) -> int:
    """Restore model, optimizer, scheduler and random states from `path`; returns the global step.

    Every rank must call it: each reads the full states and keeps what it holds (its shard under FSDP)."""
    check_checkpointing_supported(accelerator)
    problems = checkpoint_problems(path)  # resolve_checkpoint checked it too; this is for callers that did not
    if problems:
        raise ValueError(f"`resume_from_checkpoint` {path!r} is not a usable checkpoint: {', '.join(problems)}. "
                         "Resume from an older checkpoint (`latest` skips damaged ones) or delete this one.")
    try:
        set_model_state_dict(model, load_file(os.path.join(path, "model.safetensors")), options=_FULL)
        with open(os.path.join(path, "optimizer.json")) as f:
            metadata = json.load(f)
        tensors = load_file(os.path.join(path, "optimizer.safetensors"))
        optimizer_state = optimizer_state_from_tensors(tensors, metadata)
        if metadata.get("version", 1) == 1:
            _torch_optimizer(optimizer).load_state_dict(optimizer_state)
        else:
            set_optimizer_state_dict(model, _torch_optimizer(optimizer), optimizer_state, options=_FULL)
    except (RuntimeError, KeyError, ValueError) as error:  # a checkpoint of another model: shapes or names differ
        raise ValueError(f"`resume_from_checkpoint` {path!r} does not fit this model and optimizer (a run with other "
                         f"settings?): {' '.join(str(error).split())[:500]}") from error
    file = os.path.join(path, "trainer_state.json")
    try:
        with open(file) as f:
            state = json.load(f)
        problem = None  # its shape was checked above (`checkpoint_problems`)
        # LRScheduler.load_state_dict takes any dict: one without its position would silently restart the schedule
        missing = [key for key in ("base_lrs", "last_epoch") if key in scheduler.state_dict() and key not in state["scheduler"]]
        if missing:
            problem = f"the scheduler state has no {', '.join(missing)}"
        else:
            scheduler.load_state_dict(state["scheduler"])
            _restore_python_numpy_rng(state["rng"])
    except (OSError, ValueError, TypeError, KeyError, IndexError, OverflowError) as error:
        problem = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    if problem is not None:
        raise ValueError(f"`resume_from_checkpoint` {path!r} is not a usable checkpoint: {file} ({problem}). Resume "
                         "from an older checkpoint (`latest` skips damaged ones) or delete this one.")
    rng_file = os.path.join(path, f"rng-{accelerator.process_index}.safetensors")
    if os.path.exists(rng_file):
        rng = load_file(rng_file)
        torch.set_rng_state(rng["torch"])
        cuda_states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
    return state["global_step"]
