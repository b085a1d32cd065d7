#!/usr/bin/env python
"""Push the digit checkpoints to the Hub with model cards (needs `huggingface-cli login` and a network).

    python scripts/push_to_hub.py --namespace my-org                 # every model under checkpoints/digits
    python scripts/push_to_hub.py --namespace my-org --dry_run       # print the files and cards, upload nothing
"""

import json
import os
from dataclasses import dataclass, field

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from hf_specdec.cli import UsageError, parse_args, run
from hf_specdec.hub import model_card, push_model, upload_plan


@dataclass
class PushArguments:
    namespace: str = field(default="hf-specdec", metadata={"help": "Hub user or organisation."})
    checkpoints_dir: str = field(default="checkpoints/digits", metadata={"help": "Folder of model folders."})
    prefix: str = field(default="digits-", metadata={"help": "Repo name prefix: <namespace>/<prefix><model>."})
    models: list[str] = field(default_factory=lambda: ["vq-tokenizer", "teacher", "student-10L", "student-8L", "student-6L", "student-4L", "draft-1L"], metadata={"help": "Model folders to push."})
    benchmark_results: str | None = field(default="benchmarks/quality/results.json", metadata={"help": "FID/IS to add to the cards (results.json of evaluate_quality.py; '' for none)."})
    private: bool = field(default=False, metadata={"help": "Create private repos."})
    dry_run: bool = field(default=False, metadata={"help": "Only print what would be uploaded."})


def main(argv=None):
    (args,) = parse_args((PushArguments,), argv, description=__doc__)
    missing = [name for name in args.models if not os.path.isfile(os.path.join(args.checkpoints_dir, name, "config.json"))]
    if missing:
        raise UsageError(f"`models` {missing} are not model folders in `checkpoints_dir` {args.checkpoints_dir!r}.")
    repo = lambda name: f"{args.namespace}/{args.prefix}{name}"  # noqa: E731
    for name in args.models:  # every repo id is checked before the first upload
        try:
            validate_repo_id(repo(name))
        except HFValidationError as error:
            raise UsageError(f"`namespace` / `prefix` give the repo id {repo(name)!r}, which the Hub refuses: {error}")
    quality = {}
    if args.benchmark_results:
        try:
            with open(args.benchmark_results) as f:
                rows = {r["method"]: r for r in json.load(f)["results"]}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(f"`benchmark_results` {args.benchmark_results!r} is not the results.json of "
                             f"scripts/evaluate_quality.py ({type(error).__name__}: {error}).")
        quality = {"teacher": rows.get("teacher")} | {m: rows.get(f"{m} alone") for m in args.models}
    for name in args.models:
        model_dir = os.path.join(args.checkpoints_dir, name)
        row = quality.get(name)
        extra = {"fid": row["fid"], "inception_score": row["inception_score"]} if row else None
        card = model_card(model_dir, repo(name), extra_metrics=extra, teacher_repo=repo("teacher"), draft_repo=repo("draft-1L"))
        if args.dry_run:
            print(f"{repo(name)}: {', '.join(upload_plan(model_dir))}")
            continue
        print(push_model(model_dir, repo(name), card, private=args.private))


if __name__ == "__main__":
    run(main)
