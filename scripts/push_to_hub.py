#!/usr/bin/env python
"""Push a checkpoint set to the Hub with model cards (needs `huggingface-cli login` and a network).

    python scripts/push_to_hub.py --namespace my-org                 # every model under checkpoints/digits
    python scripts/push_to_hub.py --namespace my-org --checkpoints_dir checkpoints/photos
    python scripts/push_to_hub.py --namespace my-org --dry_run       # print the repos, files and cards, upload nothing

Each card names the repos it is used with: a draft's card loads its own teacher (the one it was distilled from,
`distill_metrics.json`), a teacher's card one of its drafts. FID / IS from `--benchmark_results` go on the cards of
the models that run measured, and only when it measured this `--checkpoints_dir`. Every card is made before the
first upload, so a folder without a card (the FID classifier) stops the run before anything is pushed.
"""

import json
import os
import re
from dataclasses import dataclass, field

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from hf_specdec.cli import UsageError, parse_args, run
from hf_specdec.hub import model_card, public_repos, push_model, quality_metrics, upload_plan

# Card wording of the shipped checkpoint sets' data (by the folder's name).
DATASETS = {"digits": "scikit-learn digits",
            "photos": "crops of ten photographs shipped inside Python packages (hf-specdec's `photos` dataset)"}
QUALITY_RESULTS = ["benchmarks/quality/results.json", "benchmarks/photos-quality/conditional/results.json",
                   "benchmarks/photos-quality/unconditional/results.json"]
NOT_PUSHED = ("classifier",)  # the FID classifier: an evaluation tool, no card


@dataclass
class PushArguments:
    namespace: str = field(default="hf-specdec", metadata={"help": "Hub user or organisation."})
    checkpoints_dir: str = field(default="checkpoints/digits", metadata={"help": "Folder of model folders."})
    prefix: str | None = field(default=None, metadata={"help": "Repo name prefix: <namespace>/<prefix><model> (default: "
                                                             "the folder's name and a dash, e.g. digits-)."})
    models: list[str] | None = field(default=None, metadata={"help": "Model folders to push (default: every model folder "
                                                                     "with config.json except the FID classifier)."})
    dataset: str | None = field(default=None, metadata={"help": "Training data as the cards name it (default: by the "
                                                              f"folder's name: {', '.join(DATASETS)})."})
    benchmark_results: list[str] = field(default_factory=lambda: list(QUALITY_RESULTS), metadata={
        "help": "results.json files of evaluate_quality.py whose FID/IS go on the cards (each used only if it measured "
                "this checkpoints_dir; '' for none)."})
    private: bool = field(default=False, metadata={"help": "Create private repos."})
    dry_run: bool = field(default=False, metadata={"help": "Only print what would be uploaded."})


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    (args,) = parse_args((PushArguments,), argv, description=__doc__)
    if not os.path.isdir(args.checkpoints_dir):
        raise UsageError(f"`checkpoints_dir` {args.checkpoints_dir!r} is not a folder (it should hold the `models`).")
    set_name = os.path.basename(os.path.normpath(args.checkpoints_dir))
    prefix = args.prefix if args.prefix is not None else f"{set_name}-"
    dataset = args.dataset or DATASETS.get(set_name)
    folders = sorted(f for f in os.listdir(args.checkpoints_dir)
                     if os.path.isfile(os.path.join(args.checkpoints_dir, f, "config.json")))
    models = args.models if args.models is not None else [f for f in folders if f not in NOT_PUSHED]
    if args.models is None and not models:
        raise UsageError(f"`checkpoints_dir` {args.checkpoints_dir!r} holds no model folders (sub-folders with a "
                         "config.json, other than the FID classifier).")
    twice = sorted({name for name in models if models.count(name) > 1})
    if twice:
        raise UsageError(f"`models` names {twice} more than once: each model is pushed once.")
    missing = [name for name in models if name not in folders]
    if missing or not models:
        raise UsageError(f"`models` {missing or models} are not model folders in `checkpoints_dir` "
                         f"{args.checkpoints_dir!r} (it holds {folders}).")
    if dataset is None:  # the folder's name was written into every card as the data the models were trained on
        raise UsageError(f"`dataset`: the set {set_name!r} is none of the shipped ones ({', '.join(DATASETS)}): name "
                         "the data its models were trained on, e.g. --dataset \"my photographs\".")
    repo = lambda name: f"{args.namespace}/{prefix}{name}"  # noqa: E731
    for name in models:  # every repo id is checked before the first upload
        try:
            validate_repo_id(repo(name))
        except HFValidationError as error:
            raise UsageError(f"`namespace` / `prefix` give the repo id {repo(name)!r}, which the Hub refuses: {error}")
    quality, skipped = quality_metrics(args.benchmark_results, args.checkpoints_dir)
    for path, measured in skipped:
        print(f"skipped {path}: it measured {measured!r}, not this set")

    # Which teacher each draft was distilled from (a folder of this set), and a draft for each teacher's card.
    teacher_of, hub_teacher = {}, {}
    for name in folders:
        source = read_json(os.path.join(args.checkpoints_dir, name, "distill_metrics.json")).get("teacher")
        if source and os.path.basename(os.path.normpath(source)) in folders:
            teacher_of[name] = os.path.basename(os.path.normpath(source))
        elif source and not os.path.exists(source) and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
            hub_teacher[name] = source  # distilled from a Hub repo: its card loads that one
        elif source and name in models:  # its card would name the draft as its own teacher
            raise UsageError(f"`models` {name!r} was distilled from {source!r}, which is neither a folder of "
                             f"`checkpoints_dir` nor a Hub repo id: push it from the set that holds its teacher.")
    plain_drafts = [d for d in sorted(teacher_of, key=lambda d: (not d.startswith("draft"), d))
                    if read_json(os.path.join(args.checkpoints_dir, d, "config.json")).get("model_type") == "vqgpt"]

    if args.models is None:  # teachers and tokenizers before the drafts whose cards point at them
        models.sort(key=lambda name: (name in teacher_of, name))
    cards, links, plans = {}, {}, {}
    for name in models:  # every card is made before the first upload
        model_dir = os.path.join(args.checkpoints_dir, name)
        if name in teacher_of or name in hub_teacher:  # a draft or student: used with its own teacher
            teacher_repo, draft_repo = hub_teacher.get(name) or repo(teacher_of[name]), repo(name)
        else:
            draft = next((d for d in plain_drafts if teacher_of[d] == name), None)
            teacher_repo, draft_repo = repo(name), repo(draft) if draft else None
        links[name] = f"card: teacher {teacher_repo}, draft {draft_repo}" + (
            f", FID {quality[name]['fid']:.2f}" if name in quality else "")
        try:
            cards[name] = model_card(model_dir, repo(name), dataset=dataset, extra_metrics=quality.get(name),
                                     teacher_repo=teacher_repo, draft_repo=draft_repo)
            plans[name] = upload_plan(model_dir)
        except ValueError as error:
            raise UsageError(f"`models`: {error}")
    public = public_repos([repo(name) for name in models]) if args.private and not args.dry_run else []
    if public:  # before the first upload: a refusal at the third repo left the first two pushed
        raise UsageError(f"`private`: {public} exist and are public, and pushing does not change that; nothing was "
                         "uploaded. Make them private first (`HfApi().update_repo_settings(repo_id, private=True)`), "
                         "or push without --private.")
    for name in models:
        model_dir = os.path.join(args.checkpoints_dir, name)
        if args.dry_run:  # the repos, their files and the cards they would get
            card = "\n".join(f"    | {line}" for line in str(cards[name]).splitlines())
            print(f"{repo(name)}: {', '.join(plans[name])}\n    {links[name]}\n{card}")
            continue
        print(push_model(model_dir, repo(name), cards[name], private=args.private))


if __name__ == "__main__":
    run(main)
