"""The one Accelerate training loop that every training script uses.

An optional batch step before the loss (no gradients, no autocast: on-policy samples), gradient accumulation,
clipping only when gradients sync, optional mixed precision, warmup + cosine schedule,
periodic evaluation, atomic safetensors checkpoints every N steps, `resume_from_checkpoint="latest"`, trackers
through Accelerate, a tqdm bar on the main process, and a final `save_pretrained`. Runs unchanged on one CPU, one
GPU, or many GPUs with `accelerate launch` (DDP; FSDP and DeepSpeed configs in `configs/accelerate/`).
"""

import math
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin, is_tensorboard_available, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..hub import _safetensors_files, check_output_dir
from .checkpoint import (
    check_checkpointing_supported,
    check_resume_settings,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    resume_settings,
    save_checkpoint,
    unsharded_model,
)


@dataclass
class TrainingArguments:
    output_dir: str = field(default="outputs/run", metadata={"help": "Where the final model, checkpoints and logs go."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps to train for."})
    per_device_batch_size: int = field(default=64, metadata={"help": "Examples per process per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate of AdamW."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Cosine decays to this fraction of the peak."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warmup steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this (0 = off)."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no | fp16 | bf16 (fp16 needs a GPU). Default: `accelerate launch`'s "
                                        "--mixed_precision or config file, else no; set here, it wins over them."})
    eval_every: int = field(default=200, metadata={"help": "Evaluate every N optimizer steps (0 = only at the end)."})
    save_every: int = field(default=500, metadata={"help": "Checkpoint every N optimizer steps (0 = never)."})
    checkpoints_total_limit: int = field(default=2, metadata={"help": "Keep at most this many checkpoints (0 = keep every one; --save_every 0 writes none)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (newest in output_dir/checkpoints, if any) or a checkpoint path. The "
                                        "run must keep the checkpoint's learning rate, batch size, accumulation, warmup, "
                                        "weight decay, betas, seed and its data, model and distillation settings "
                                        "(folders may move); max_steps may grow."}
    )
    report_to: str = field(default="none", metadata={"help": "wandb | tensorboard | none. wandb runs offline without credentials."})
    project_name: str = field(default="hf-specdec", metadata={"help": "Tracker project name."})
    log_every: int = field(default=10, metadata={"help": "Log training metrics every N optimizer steps."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation and data order."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Train into an `output_dir` that already holds a saved model, replacing it (a resumed run may always)."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})

    def __post_init__(self):
        check_output_dir(self.output_dir)
        for name in ("max_steps", "per_device_batch_size", "gradient_accumulation_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        for name in ("warmup_steps", "eval_every", "save_every", "checkpoints_total_limit", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not 0 <= self.seed < 2**32:  # what `set_seed` / numpy accept
            raise ValueError(f"`seed` must be in [0, 2**32), got {self.seed}.")
        earlier = list_checkpoints(os.path.join(self.output_dir, "checkpoints"))
        if earlier and self.resume_from_checkpoint is None:  # a fresh run would mix its checkpoints with those
            raise ValueError(f"`output_dir` {self.output_dir!r} holds checkpoints of an earlier run (up to "
                             f"{os.path.basename(earlier[-1])}): continue it with `--resume_from_checkpoint latest`, "
                             "or start afresh in another `output_dir` (or delete its `checkpoints` folder).")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):  # NaN and inf would train a NaN model
            raise ValueError(f"`learning_rate` must be a finite number > 0, got {self.learning_rate}.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"`min_lr_ratio` must be in [0, 1], got {self.min_lr_ratio}.")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        for name in ("weight_decay", "max_grad_norm"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {getattr(self, name)}.")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"`mixed_precision` must be one of no, fp16, bf16; got {self.mixed_precision!r}.")
        if self.report_to not in ("wandb", "tensorboard", "none"):
            raise ValueError(f"`report_to` must be one of wandb, tensorboard, none; got {self.report_to!r}.")
        if self.report_to == "tensorboard" and not is_tensorboard_available():  # Accelerate would only warn
            raise ValueError("`report_to` tensorboard needs the tensorboard package: `pip install tensorboard`, or "
                             "use `report_to` wandb or none.")
        if self.warmup_steps > self.max_steps:  # equal: the last step runs at the peak
            warnings.warn(f"`warmup_steps` ({self.warmup_steps}) > `max_steps` ({self.max_steps}): the learning rate "
                          f"never reaches `learning_rate` ({self.learning_rate:g}), only {self.max_steps / max(1, self.warmup_steps):.0%} "
                          "of it.", stacklevel=3)


def make_accelerator(args: TrainingArguments) -> Accelerator:
    """An `Accelerator` for `args` (created by the caller's script, never at import time), with every random number
    generator seeded by `args.seed`."""
    if args.report_to == "wandb" and not os.environ.get("WANDB_API_KEY") and not os.path.exists(os.path.expanduser("~/.netrc")):
        os.environ.setdefault("WANDB_MODE", "offline")  # no credentials: log to output_dir/wandb, sync later
    accelerator = Accelerator(
        # Every optimizer step is exactly `gradient_accumulation_steps` micro-batches, also across an epoch's end
        # (Accelerate's default closes the step early at the end of the dataloader: a short step whose loss is still
        # divided by the full count, and a data position `train` cannot recompute on resume).
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=args.gradient_accumulation_steps,
                                                                sync_with_dataloader=False),
        mixed_precision=args.mixed_precision,  # None: `accelerate launch`'s setting
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # Accelerate accepts it and autocast then leaves every op in float32: a run the user believes is fp16.
        AcceleratorState._reset_state(reset_partial_state=True)
        raise ValueError("`mixed_precision` fp16 needs a GPU: on the CPU it would train in float32 without a word. "
                         "Use bf16 or no (`--mixed_precision`, or `accelerate launch --mixed_precision`).")
    set_seed(args.seed)  # before the caller builds its model: `--seed` seeds the initialisation too (`train` reseeds)
    return accelerator


def tracker_init_kwargs(args: TrainingArguments) -> dict:
    """Where each tracker writes: wandb's run folder under `output_dir` (by default it is `./wandb` in the current
    directory, away from the run's model and mixed with other runs started there)."""
    return {"wandb": {"dir": args.output_dir}} if args.report_to == "wandb" else {}


def cosine_schedule_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Linear warmup to the peak, then cosine decay to `min_lr_ratio` of it at `total_steps`."""

    def lr_lambda(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def _parameter_groups(model: torch.nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    model: torch.nn.Module,
    train_dataset,
    loss_fn: Callable,
    args: TrainingArguments,
    accelerator: Accelerator | None = None,
    collate_fn: Callable | None = None,
    eval_fn: Callable | None = None,
    save_fn: Callable | None = None,
    run_config: dict | None = None,
    batch_fn: Callable | None = None,
) -> torch.nn.Module:
    """Train `model` on `train_dataset`; returns the unwrapped model.

    Args:
        loss_fn: `loss_fn(model, batch, step) -> (loss, logs: dict[str, float])`, run inside autocast.
        eval_fn: `eval_fn(unwrapped_model, step) -> dict[str, float]`, run on every process (logged on the main one).
        save_fn: `save_fn(model, output_dir)` on the main process, with the whole trained model (gathered from the
            shards under FSDP: `unsharded_model`); default `save_pretrained` (safetensors).
        run_config: extra config logged to the trackers (the script's dataclasses).
        batch_fn: `batch_fn(unwrapped_model, batch, step) -> (batch, logs: dict[str, float])`, run before the loss
            under `torch.no_grad()`, outside autocast and gradient accumulation: where the batch is rebuilt, e.g.
            from the model's own samples (on-policy distillation, as TRL's `GKDTrainer.training_step`).
    """
    accelerator = accelerator or make_accelerator(args)
    if args.save_every or args.resume_from_checkpoint:
        check_checkpointing_supported(accelerator)
    set_seed(args.seed)  # the same on every rank: the sampler's shuffle (`data_seed`, else torch's initial seed)
    os.makedirs(args.output_dir, exist_ok=True)
    checkpoints_dir = os.path.join(args.output_dir, "checkpoints")
    checkpoint = check_resumable(args, run_config, len(train_dataset), accelerator.num_processes)
    lock = take_run_lock(accelerator, args.output_dir)
    settings = resume_settings(args, run_config)

    dataloader = DataLoader(
        train_dataset,
        batch_size=args.per_device_batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate_fn,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, args.weight_decay), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2)
    )
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    # From here each process its own stream (seed + rank; one process: the seed) for dropout, class dropout and
    # samples: one stream on every rank drew the same masks for each rank's micro-batch. The model was built, and the
    # sampler seeded, on the one seed before (and DDP broadcast rank 0's weights).
    set_seed(args.seed, device_specific=True)
    # Stepped by hand once per optimizer step, so the schedule means the same on any number of processes.
    scheduler = cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps, args.min_lr_ratio)

    step = 0
    if checkpoint is not None:
        step = load_checkpoint(accelerator, model, optimizer, scheduler, checkpoint)
        accelerator.print(f"Resumed from {checkpoint} at step {step}.")
    if accelerator.is_main_process and args.report_to != "none":
        config = {**asdict(args), **(run_config or {})}
        os.makedirs(args.output_dir, exist_ok=True)
        accelerator.init_trackers(args.project_name, init_kwargs=tracker_init_kwargs(args),
                                  config={k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()})

    batches_per_epoch = len(dataloader)
    micro_step = step * args.gradient_accumulation_steps
    epoch, skip = divmod(micro_step, batches_per_epoch)
    progress = tqdm(total=args.max_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process)
    unwrapped = accelerator.unwrap_model(model)
    running: dict[str, float] = {}
    first_step = step

    def evaluate():
        model.eval()
        metrics = eval_fn(unwrapped, step)
        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
        accelerator.print(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    while step < args.max_steps:
        dataloader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch in batches:
            model.train()
            batch_logs = {}
            if batch_fn is not None:
                with torch.no_grad():
                    batch, batch_logs = batch_fn(unwrapped, batch, step)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, logs = loss_fn(model, batch, step)
                logs = {**batch_logs, **logs}
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    logs["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm))
                loss_value = loss.item()  # (the one read of the loss per micro-batch)
                check_finite(accelerator, loss_value, logs.get("grad_norm", 0.0), step + 1, checkpoints_dir)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for key, value in {"loss": loss_value, **logs}.items():
                running[key] = running.get(key, 0.0) + value / args.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            progress.update(1)
            if step % args.log_every == 0 or step == args.max_steps:
                metrics = {f"train/{k}": v for k, v in running.items()} | {"train/lr": scheduler.get_last_lr()[0]}
                accelerator.log(metrics, step=step)
                progress.set_postfix(loss=f"{running['loss']:.4f}")
            running = {}
            if eval_fn is not None and (step == args.max_steps or (args.eval_every and step % args.eval_every == 0)):
                evaluate()
            if args.save_every and (step % args.save_every == 0 or step == args.max_steps):
                save_checkpoint(accelerator, model, optimizer, scheduler, step, checkpoints_dir, args.checkpoints_total_limit,
                                settings)
            if step >= args.max_steps:
                break
        epoch, skip = epoch + 1, 0
    progress.close()
    # Every run evaluates at `max_steps` in the loop; one resumed there ran no step: evaluate it here, or its saved
    # metrics would be written empty over the finished run's.
    if eval_fn is not None and step == first_step:
        evaluate()

    accelerator.wait_for_everyone()
    final = unsharded_model(accelerator, model)  # under FSDP a gather: every rank calls it
    if accelerator.is_main_process:
        (save_fn or (lambda m, d: m.save_pretrained(d)))(final, args.output_dir)
    # No rank tears the process group down while another still works (one 2-process CPU test run hung at this
    # point, with rank 0 finished and rank 1 still inside `train`; not reproduced since).
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if lock is not None:
        os.remove(lock)
    return unwrapped


def check_output_free(args) -> None:
    """`ValueError` when `output_dir` already holds a saved model and the run neither resumes nor was told
    `overwrite_output_dir`: a 2-step trial with a shipped config replaced the trained tokenizer (and every model
    trained on it then refused it), and a teacher saved into a tokenizer folder left a folder of two models. The
    scripts call it after their check that `output_dir` is none of their inputs (a more specific refusal). `args`: any
    arguments with `output_dir` and `overwrite_output_dir` (and `resume_from_checkpoint` where a run can resume)."""
    saved = _saved_model_files(args.output_dir)
    if saved and getattr(args, "resume_from_checkpoint", None) is None and not args.overwrite_output_dir:
        raise ValueError(f"`output_dir` {args.output_dir!r} already holds a saved model ({', '.join(saved)}): this run "
                         "would replace it (or, for a model of another kind, leave a folder of two models). Pass "
                         "`--overwrite_output_dir true` to replace it, or choose another `output_dir`.")


def _saved_model_files(folder: str) -> list[str]:
    """The config and weights files of a model saved in `folder` itself (`save_pretrained`), if any."""
    if not os.path.isdir(folder):
        return []
    weights = _safetensors_files(folder)
    if not weights:
        return []
    return (["config.json"] if os.path.isfile(os.path.join(folder, "config.json")) else []) + weights


def on_any_process(accelerator, flag: bool) -> bool:
    """`flag` or-ed over the processes, so that every one raises together where one would otherwise leave the others
    waiting in their next collective (no communication with one process; `accelerator=None`: a one-process run)."""
    if accelerator is None or accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="max").item())


RUN_LOCK = ".run.lock"


def take_run_lock(accelerator, output_dir: str) -> str | None:
    """Claim `output_dir` for this run (the main process writes its host and pid to `RUN_LOCK`; the path is
    returned to remove at the end); `ValueError` on every process when a live process of this machine holds it: two
    runs in one folder both trained, overwrote each other's temporary checkpoint and one died after its training. A
    lock left by a killed run (its process gone), by an earlier call of this process, or from another machine (whose
    processes cannot be checked from here) is taken over. `accelerator=None`: a one-process run without Accelerate."""
    path, holder = os.path.join(output_dir, RUN_LOCK), None
    main_process = accelerator is None or accelerator.is_main_process
    if main_process:
        try:
            with open(path) as f:
                host, pid = f.read().split()
            if host == socket.gethostname() and int(pid) != os.getpid() and _process_alive(int(pid)):
                holder = int(pid)
        except (OSError, ValueError):
            pass  # no lock, or an unreadable one
    if on_any_process(accelerator, holder is not None):
        raise ValueError(f"`output_dir` {output_dir!r} is in use by another run (process {holder or 'on rank 0'}, "
                         f"{path}): wait for it, or give another `output_dir`.")
    if not main_process:
        return None
    with open(path, "w") as f:
        f.write(f"{socket.gethostname()} {os.getpid()}")
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def check_resumable(args: TrainingArguments, run_config: dict | None, num_examples: int, num_processes: int = 1):
    """What `train` checks before its first step, for a run to call before its own long preparation (a
    distillation samples the teacher first): the checkpoint to resume (None for a fresh run; a damaged one fails
    here) was written by a run of the same settings on as many processes, and one optimizer step fits in an epoch of
    `num_examples` split over `num_processes`."""
    check_output_free(args)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, os.path.join(args.output_dir, "checkpoints"))
    if checkpoint is not None:
        check_resume_settings(checkpoint, resume_settings(args, run_config), args.max_steps, num_processes)
    if num_examples // (args.per_device_batch_size * num_processes) < args.gradient_accumulation_steps:  # full batches
        on = f" on each of {num_processes} processes" if num_processes > 1 else ""
        raise ValueError(
            f"`per_device_batch_size` {args.per_device_batch_size} x `gradient_accumulation_steps` "
            f"{args.gradient_accumulation_steps}{on} is more than one epoch of {num_examples} examples."
        )
    return checkpoint


def check_finite(accelerator, loss: float, grad_norm: float, step: int, checkpoints_dir: str) -> None:
    """Stop a diverged run before its optimizer step: a NaN or infinite loss or gradient norm (on any process) raises
    `ValueError` naming the step, so no NaN weights are stepped into, checkpointed over the good ones (the oldest of
    which `checkpoints_total_limit` deletes) or saved as the model; the last checkpoint stays as it was."""
    if on_any_process(accelerator, not (math.isfinite(loss) and math.isfinite(grad_norm))):
        latest = list_checkpoints(checkpoints_dir)[-1:] if os.path.isdir(checkpoints_dir) else []
        where = (f"the last checkpoint, {latest[0]!r}, is untouched: resume it with `--resume_from_checkpoint latest` "
                 "and a lower `learning_rate`" if latest else "no checkpoint was written: lower `learning_rate`")
        raise ValueError(f"step {step}: the training loss is {loss} and the gradient norm {grad_norm} (the run "
                         f"diverged): stopped before the optimizer step, nothing saved; {where}.")


def steps_for_epochs(num_examples: int, epochs: float, args: TrainingArguments, num_processes: int = 1) -> int:
    """Optimizer steps that cover `epochs` passes over `num_examples`."""
    per_step = args.per_device_batch_size * args.gradient_accumulation_steps * num_processes
    return max(1, math.ceil(epochs * num_examples / per_step))
