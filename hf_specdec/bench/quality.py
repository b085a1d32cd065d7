"""Image quality of every sampling method: FID and IS (classifier features) with bootstrap intervals.

Lossless speculative sampling must score like the teacher (within the interval); the relaxed (lossy) acceptance
shows what it costs. The reference images are the held-out validation + test images of the dataset. An experiment over the
metrics of `hf_specdec.metrics`; `scripts/evaluate_quality.py` is its command line.
"""

import json
import os
import warnings
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..data import DataArguments
from ..hub import (check_checkpoint_name, check_checkpoints_dir, check_output_dir, check_output_not_input,
                   check_outside_models, checkpoint_path, json_safe, load_draft, load_pretrained, resolve_drafts)
from ..images import images_to_tensor, save_image_grid
from ..metrics import load_metric
from ..metrics.classifier import DigitsClassifier
from ..metrics.quality import check_bootstrap, check_inception_available, inception_metrics
from ..models import VQGPTForCausalLM, VQTokenizer
from ..pipeline import check_dataset_matches, check_sampling_options, check_tokenizer_matches, class_prompts, decode_sequences
from ..speculative import latent_neighbours, plain_sample, speculative_sample
from .timing import check_device


@dataclass
class QualityArguments:
    checkpoints_dir: str = field(default="checkpoints/digits", metadata={"help": "Folder with all models."})
    teacher: str = field(default="teacher", metadata={"help": "Teacher sub-folder."})
    tokenizer: str = field(default="vq-tokenizer", metadata={"help": "Tokenizer sub-folder."})
    classifier: str = field(default="classifier", metadata={"help": "DigitsClassifier (FID/IS features): a sub-folder of checkpoints_dir, or a folder path."})
    drafts: list[str] = field(default_factory=lambda: ["draft-1L", "student-4L", "student-10L"], metadata={"help": "Students scored alone: sub-folders, folder paths or Hub repo ids; a size preset's name (student-4L, ...) with no folder is skipped with a note, any other unknown name is refused."})
    speculative_draft: str = field(default="draft-1L", metadata={"help": "Draft of the speculative runs; `none` scores "
                                   "the teacher (and the drafts alone) only, e.g. to compare teachers."})
    gamma: int = field(default=4, metadata={"help": "Draft length of the speculative runs."})
    relaxed_neighbours: int = field(default=4, metadata={"help": "Latent neighbours of the relaxed (lossy) run; 0 = skip."})
    num_images: int = field(default=360, metadata={"help": "Images per method (= held-out real images used)."})
    batch_size: int = field(default=120, metadata={"help": "Images per generation call."})
    bootstrap_rounds: int = field(default=100, metadata={"help": "Bootstrap resamples for the intervals (>= 2)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k (None = off)."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    inception: bool = field(default=False, metadata={"help": "Also the standard Inception FID/IS (needs torch-fidelity and its weights)."})
    output_dir: str = field(default="benchmarks/quality", metadata={"help": "results.json, results.md, grids."})

    def __post_init__(self):
        for name in ("gamma", "num_images", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        check_bootstrap(self.bootstrap_rounds, self.seed, "bootstrap_rounds")  # 1 wrote NaN intervals after the work
        if self.num_images < 2:  # FID needs two images per side: found after all the sampling
            raise ValueError(f"`num_images` must be >= 2 (FID compares covariances), got {self.num_images}.")
        if self.relaxed_neighbours < 0:
            raise ValueError(f"`relaxed_neighbours` must be >= 0, got {self.relaxed_neighbours}.")
        check_device(self.device)
        check_checkpoints_dir(self.checkpoints_dir)
        check_output_dir(self.output_dir)
        check_outside_models(self.output_dir, "output_dir")  # results are no part of a model folder


def _sample(method, teacher, draft, prompts, args, neighbours=None):
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    kwargs = dict(do_sample=True, temperature=args.temperature, top_k=args.top_k, generator=generator)
    out = []
    for i in tqdm(range(0, len(prompts), args.batch_size), desc=f"sampling ({method})", leave=False):
        prompt = prompts[i : i + args.batch_size]
        if method == "alone":
            out.append(plain_sample(draft, prompt, **kwargs))
        else:
            out.append(speculative_sample(teacher, draft, prompt, gamma=args.gamma, relaxed_neighbours=neighbours, **kwargs).sequences)
    return torch.cat(out)


def check_classifier(classifier_path: str, class_names: list[str], resolution: int) -> None:
    """Raise `ValueError` naming `classifier` unless `classifier_path` holds a classifier of the dataset's classes
    with its `metrics.json` (what `scripts/train_classifier.py` writes; the classes and resolution it records are
    compared where it records them)."""
    classifier = load_pretrained(DigitsClassifier, classifier_path, "classifier")
    retrain = "train one on this dataset with scripts/train_classifier.py"
    if classifier.config.num_classes != len(class_names):
        raise ValueError(f"`classifier` {classifier_path!r} tells {classifier.config.num_classes} classes apart but the "
                         f"dataset has {len(class_names)}: {retrain}.")
    try:
        with open(os.path.join(classifier_path, "metrics.json")) as f:
            recorded = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"`classifier` {classifier_path!r} has no readable metrics.json (its test accuracy, which the "
                         f"results report; {type(error).__name__}): {retrain}.") from error
    if "classes" in recorded and list(recorded["classes"]) != list(class_names):
        raise ValueError(f"`classifier` {classifier_path!r} was trained on the classes {recorded['classes'][:4]}... "
                         f"of {recorded.get('dataset')!r}, not {list(class_names)[:4]}...: {retrain}.")
    if "resolution" in recorded and recorded["resolution"] != resolution:
        raise ValueError(f"`classifier` {classifier_path!r} was trained at resolution {recorded['resolution']}, the "
                         f"images here are {resolution}x{resolution}: {retrain}.")


def check_relaxed_neighbours(k, tokenizer) -> None:
    """Raise `ValueError` naming `relaxed_neighbours` unless it is 0 (no relaxed run) or a number of latent
    neighbours the tokenizer's codebook has (1..K, the code itself included)."""
    K = tokenizer.quantize.embedding.weight.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= K:
        raise ValueError(f"`relaxed_neighbours` must be an integer in [0, {K}] (0 = no relaxed run; the tokenizer has "
                         f"{K} codes), got {k!r}.")


def _file_stem(name: str) -> str:
    """A file name (no folder) for a draft given as a name, a path or a Hub repo id."""
    return os.path.basename(os.path.normpath(name)).replace(" ", "-") or "draft"


def _grid_files(stems: dict[str, str]) -> dict[str, str]:
    """method -> `<stem>.png`, a bare file name (it lands in output_dir/samples), unique among the methods."""
    files, used = {}, set()
    for method, stem in stems.items():
        stem = os.path.basename(stem) or "samples"
        file, i = f"{stem}.png", 2
        while file in used:
            file, i = f"{stem}-{i}.png", i + 1
        used.add(file)
        files[method] = file
    return files


def evaluate_quality(args: QualityArguments, data_args: DataArguments | None = None) -> dict:
    data_args = data_args or DataArguments()
    check_output_not_input(args.output_dir, data_dir=data_args.data_dir)  # its sample grids would become a class
    for argument in ("teacher", "tokenizer", "classifier") + (("speculative_draft",) if args.speculative_draft.lower() != "none" else ()):
        check_checkpoint_name(getattr(args, argument), args.checkpoints_dir, argument)
    if args.inception:  # its weights are needed after all the sampling: checked first
        check_inception_available()
    load = lambda cls, name, argument: load_pretrained(cls, checkpoint_path(args.checkpoints_dir, name), argument, args.device)  # noqa: E731
    teacher = load(VQGPTForCausalLM, args.teacher, "teacher")
    check_sampling_options(teacher, gamma=args.gamma, temperature=args.temperature, top_k=args.top_k)
    tokenizer = load(VQTokenizer, args.tokenizer, "tokenizer")
    check_tokenizer_matches(tokenizer, teacher.config, data_args.resolution)
    check_relaxed_neighbours(args.relaxed_neighbours, tokenizer)
    # Drafts are loaded and checked before any sampling, so a bad one costs no work.
    notes = []
    drafts = {}
    for name in resolve_drafts(args.drafts, args.checkpoints_dir, notes):
        drafts[name] = load_draft(checkpoint_path(args.checkpoints_dir, name), "drafts", teacher, args.device)
    for name, model in drafts.items():
        if getattr(model, "reads_features", False):
            raise ValueError(f"`drafts` {name!r} is a feature-conditioned draft: it cannot sample alone (it reads the "
                             "teacher's hidden states); give it as `speculative_draft` instead.")
    draft = None
    if args.speculative_draft.lower() != "none":
        draft = drafts[args.speculative_draft] if args.speculative_draft in drafts else load_draft(
            checkpoint_path(args.checkpoints_dir, args.speculative_draft), "speculative_draft", teacher, args.device)
    classifier_path = checkpoint_path(args.checkpoints_dir, args.classifier)  # a sub-folder, or a path as accepted
    splits = data_args.load()
    class_names = splits["train"].features["label"].names
    check_dataset_matches(teacher.config, class_names)  # real images of the same classes
    check_classifier(classifier_path, class_names, data_args.resolution)  # used after all the sampling: checked now
    held_out = images_to_tensor(list(splits["validation"][:]["image"]) + list(splits["test"][:]["image"]), data_args.resolution)
    n = min(args.num_images, len(held_out), len(splits["train"]))  # the train split is the real-vs-real row
    if n < 2:
        raise ValueError(f"`num_images`: only {n} real image(s) to compare with (validation + test: {len(held_out)}, "
                         f"train: {len(splits['train'])}); FID needs at least 2. Use more images or other split "
                         "fractions.")
    if n < args.num_images:
        note = (f"num_images {args.num_images} capped at the {n} real images (held out: validation + test; and the "
                "train split's real-vs-real row) the samples are compared with")
        warnings.warn(note, stacklevel=2)
        notes.append(note)
    references = held_out[:n]
    train_images = images_to_tensor(splits["train"].select(range(n))[:]["image"], data_args.resolution)

    prompts = class_prompts(teacher, n)
    methods = {"real (train split)": train_images}
    decode = lambda sequences: decode_sequences(tokenizer, sequences, teacher.config).clamp(-1, 1).cpu()  # noqa: E731
    methods["teacher"] = decode(_sample("alone", teacher, teacher, prompts, args))
    grid_names = {}  # method -> sample grid file stem, where the method's name does not give it
    for name, model in drafts.items():
        methods[f"{name} alone"] = decode(_sample("alone", teacher, model, prompts, args))
        grid_names[f"{name} alone"] = _file_stem(name) + "-alone"
    if draft is not None:
        methods[f"speculative ({args.speculative_draft}, gamma={args.gamma})"] = decode(_sample("speculative", teacher, draft, prompts, args))
    if args.relaxed_neighbours and draft is not None:
        neighbours = latent_neighbours(tokenizer.quantize.embedding.weight.detach(), args.relaxed_neighbours)
        methods[f"relaxed speculative (k={args.relaxed_neighbours}, LOSSY)"] = decode(_sample("speculative", teacher, draft, prompts, args, neighbours))

    grid_files = _grid_files({name: grid_names.get(name) or name.split(" (")[0].replace(" ", "-") for name in methods})
    fid = load_metric("fid")
    inception_score = load_metric("inception_score")
    os.makedirs(os.path.join(args.output_dir, "samples"), exist_ok=True)
    results = []
    for name, images in methods.items():
        f = fid.compute(predictions=images.numpy(), references=references.numpy(), classifier_path=classifier_path,
                        bootstrap_rounds=args.bootstrap_rounds, seed=args.seed)
        s = inception_score.compute(predictions=images.numpy(), classifier_path=classifier_path,
                                    bootstrap_rounds=args.bootstrap_rounds, seed=args.seed)
        if args.inception:
            f.update(inception_metrics(images, references))
        results.append({"method": name, **f, **s})
        save_image_grid(images[:80], os.path.join(args.output_dir, "samples", grid_files[name]), nrow=10)
    with open(os.path.join(classifier_path, "metrics.json")) as f_:
        classifier_metrics = json.load(f_)
    summary = {"args": asdict(args), "working_directory": os.getcwd(),  # what the relative paths in `args` are under
               "classifier": classifier_metrics, "num_images": n, "results": results, "notes": notes}
    with open(os.path.join(args.output_dir, "results.json"), "w") as f_:
        json.dump(json_safe(summary), f_, indent=1, allow_nan=False)
    lines = [f"FID / IS on classifier features (test accuracy {classifier_metrics['test_accuracy']:.3f}), {n} images per method, "
             f"reference: {n} held-out real images ({data_args.dataset}), 95% normal bootstrap intervals ({args.bootstrap_rounds} resamples).", "",
             "| method | FID | IS |", "| --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['fid']:.2f} ({r['fid_low']:.2f}-{r['fid_high']:.2f}) | "
              f"{r['inception_score']:.2f} ({r['inception_score_low']:.2f}-{r['inception_score_high']:.2f}) |" for r in results]
    lines += [""] + [f"Note: {note}" for note in notes] if notes else []
    with open(os.path.join(args.output_dir, "results.md"), "w") as f_:
        f_.write("\n".join(lines) + "\n")
    return summary
