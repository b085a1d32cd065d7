#!/usr/bin/env python
"""Store model folders' weights in half precision: half the disk and download, same compute dtype on load.

    python scripts/compact_checkpoints.py --folders checkpoints/digits/student-10L checkpoints/digits/student-8L \
        --teacher_path checkpoints/digits/teacher      # and measure alpha against the teacher before and after

config.json is left as it is, so `from_pretrained` still builds a float32 model (the weights widened back). Meant
for drafts and students: speculative sampling is exact for any draft, only acceptance can move (by ~1e-5 on the
shipped students, `benchmarks/compact-students/`), so `--teacher_path` measures it before anything is rewritten.
Teachers and tokenizers define the output: leave them at full precision. A folder that holds one (a diffusers
tokenizer or classifier, a teacher trained by `train_teacher.py`: its `training_metrics.json`, or the
`--teacher_path` folder itself) is refused unless `--allow_teacher` is given.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import torch

from hf_specdec.cli import parse_args, run
from hf_specdec.hub import (STORAGE_DTYPES, check_output_file, check_weights_folder, compact_weights, load_draft,
                            load_pretrained)
from hf_specdec.models import VQGPTForCausalLM
from hf_specdec.models.generation_vqgpt import check_draft_matches


@dataclass
class CompactArguments:
    folders: list[str] = field(default_factory=list, metadata={"help": "Model folders (config.json + .safetensors) to rewrite in place."})
    dtype: str = field(default="float16", metadata={"help": f"Storage dtype, one of {sorted(STORAGE_DTYPES)}."})
    teacher_path: str | None = field(default=None, metadata={"help": "Teacher to measure each draft's alpha against, before and after (none: do not measure)."})
    num_sequences: int = field(default=256, metadata={"help": "Teacher samples (classes in turn, seed 1234) for alpha."})
    output_json: str | None = field(default=None, metadata={"help": "Write the sizes (and alphas) here."})
    allow_teacher: bool = field(default=False, metadata={"help": "Also rewrite teachers and tokenizers (refused by default: rounding them changes the output distribution itself)."})

    def __post_init__(self):
        if not self.folders:
            raise ValueError("`folders` names no model folder; pass --folders PATH [PATH ...].")
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"`dtype` must be one of {sorted(STORAGE_DTYPES)}, got {self.dtype!r}.")
        resolved = [os.path.realpath(folder) for folder in self.folders]
        if len(set(resolved)) < len(resolved):  # compacted twice, its "before" measured on rounded weights
            twice = sorted({f for f, r in zip(self.folders, resolved) if resolved.count(r) > 1})
            raise ValueError(f"`folders` lists the same folder more than once: {twice}.")
        if self.num_sequences < 1:
            raise ValueError(f"`num_sequences` must be >= 1, got {self.num_sequences}.")
        if self.output_json is not None:
            check_output_file(self.output_json, "output_json", folders=self.folders, teacher_path=self.teacher_path)


def check_not_a_teacher(folder: str, args: CompactArguments) -> None:
    """`ValueError` for a folder that defines the output rather than drafting: rounding it would change what
    speculative decoding is lossless against. The `--teacher_path` folder is refused even with `--allow_teacher`
    (alpha against itself measures nothing)."""
    if args.teacher_path is not None and os.path.realpath(folder) == os.path.realpath(args.teacher_path):
        raise ValueError(f"`folders` {folder!r} is the `teacher_path` itself: compact drafts and students, measured "
                         "against their teacher.")
    if args.allow_teacher:
        return
    with open(os.path.join(folder, "config.json")) as f:
        kind = json.load(f).get("_class_name")  # diffusers models: the VQ tokenizer, the FID classifier
    trained_as_teacher = (os.path.exists(os.path.join(folder, "training_metrics.json"))
                          and not os.path.exists(os.path.join(folder, "distill_metrics.json")))
    if kind or trained_as_teacher:
        what = f"a {kind}" if kind else "a teacher (its training_metrics.json is train_teacher.py's)"
        raise ValueError(f"`folders` {folder!r} holds {what}: it defines the output, and rounding its weights would "
                         "change the distribution speculative decoding reproduces. Pass --allow_teacher to do it anyway.")


@torch.no_grad()
def alpha_of(teacher, folder: str, sequences: torch.Tensor) -> float:
    from hf_specdec.distill import expected_acceptance

    return expected_acceptance(teacher, load_draft(folder, "folders", teacher), sequences)["alpha"]


def main(argv=None):
    (args,) = parse_args((CompactArguments,), argv, description=__doc__)
    for folder in args.folders:  # every folder is checked before the first is rewritten
        check_weights_folder(folder, "folders")
        check_not_a_teacher(folder, args)
    teacher = sequences = None
    if args.teacher_path is not None:
        from hf_specdec.distill import sample_sequences

        teacher = load_pretrained(VQGPTForCausalLM, args.teacher_path, "teacher_path")
        for folder in args.folders:
            try:
                check_draft_matches(teacher, load_draft(folder, "folders", teacher), "folders")  # feature drafts too
            except ValueError as error:
                raise ValueError(f"{error} (folder {folder!r}, `teacher_path` {args.teacher_path!r})") from None
        classes = teacher.config.num_classes
        prompts = (teacher.class_prompt(torch.arange(args.num_sequences) % classes) if classes
                   else teacher.class_prompt(batch_size=args.num_sequences))
        sequences = sample_sequences(teacher, prompts, seed=1234)
    results = {}
    for folder in args.folders:
        row = {}
        if teacher is not None:  # measured on a copy first: a draft that loses acceptance is not rewritten blind
            with tempfile.TemporaryDirectory() as scratch:
                shutil.copytree(folder, f"{scratch}/model")
                compact_weights(f"{scratch}/model", args.dtype, argument="folders")
                row["alpha_before"] = alpha_of(teacher, folder, sequences)
                row["alpha_after"] = alpha_of(teacher, f"{scratch}/model", sequences)
        row.update(compact_weights(folder, args.dtype, argument="folders"))
        results[folder] = row
        alpha = f", alpha {row['alpha_before']:.5f} -> {row['alpha_after']:.5f}" if teacher is not None else ""
        print(f"{folder}: {row['bytes_before'] / 2**20:.2f} -> {row['bytes_after'] / 2**20:.2f} MiB, "
              f"largest weight change {row['max_abs_change']:.2e}{alpha}")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"dtype": args.dtype, "teacher_path": args.teacher_path, "num_sequences": args.num_sequences,
                       "folders": results}, f, indent=1)


if __name__ == "__main__":
    run(main)
