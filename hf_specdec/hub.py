"""The project's models and the Hub: loading by folder or repo id with a clear error, model cards rendered from the
templates in `model_cards/` (shipped as package data) with `model-index` results, and pushing."""

import json
import math
import os
import re
import tempfile
import warnings

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import SafetensorError

from .models.configuration_vqgpt import VQGPT_PRESETS, _is_finite_number
from .models.modeling_vqgpt import check_model_path, relative_path_hint
from .models.safetensors_only import damaged_safetensors, damaged_weights_message, weights_folder

# Package data: `hf_specdec/model_cards` links to the repository's `model_cards/` (their home), and the templates are
# installed with the package, so cards render from a non-editable install too.
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_cards")


def check_checkpoints_dir(checkpoints_dir: str, argument: str = "checkpoints_dir") -> None:
    """Raise `ValueError` naming `argument` unless `checkpoints_dir` is a folder (the models in it are named relative
    to it, so a missing one would surface later as a confusing error about a model name)."""
    if not os.path.isdir(checkpoints_dir):
        hint = relative_path_hint(checkpoints_dir) if not os.path.exists(checkpoints_dir) else ""
        raise ValueError(f"`{argument}` {checkpoints_dir!r} is not a folder{hint}; it holds the teacher and the drafts.")


def check_output_dir(path: str, argument: str = "output_dir") -> None:
    """Raise `ValueError` naming `argument` unless `path` is a folder or can be made one: checked when the arguments
    are, so that a file in the way or a read-only place surfaces before the work, not when its results are saved.
    Makes nothing."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"`{argument}` must be a folder path, got {path!r}.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`{argument}` {path!r} is a file, not a folder.")
    _check_writable_ancestor(os.path.abspath(path), path, argument, "made")


def check_output_not_input(output_dir: str, argument: str = "output_dir", *, data_dir: str | None = None,
                           **model_folders: str | None) -> None:
    """Raise `ValueError` naming `argument` when the run would write where it reads: `output_dir` is one of the model
    folders `model_folders` (argument name -> path; the final save would overwrite the model the run reads, and exit
    0), or lies inside the image folder `data_dir` (it would be read as a class of images next time). Paths are
    compared after resolving links and `..`; Hub ids and missing folders are no folders here."""
    out = os.path.realpath(output_dir)
    for name, path in model_folders.items():
        if isinstance(path, str) and os.path.isdir(path) and os.path.realpath(path) == out:
            raise ValueError(f"`{argument}` {output_dir!r} is the `{name}` folder: the run would overwrite the model "
                             "it reads. Choose another `output_dir`.")
    if isinstance(data_dir, str) and os.path.isdir(data_dir) and (out == os.path.realpath(data_dir)
                                                                    or _inside(out, data_dir)):
        raise ValueError(f"`{argument}` {output_dir!r} is inside the `data_dir` image folder {data_dir!r}: its "
                         "files would be read as images (a folder there is a class). Choose another `output_dir`.")


def saved_model_folder(path: str) -> str | None:
    """The saved model folder (a `config.json` beside safetensors weights) that `path` is, or lies inside, or None."""
    folder = os.path.realpath(path)
    while True:
        if os.path.isfile(os.path.join(folder, "config.json")) and any(
                name.endswith((".safetensors", ".safetensors.index.json")) for name in os.listdir(folder)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def check_outside_models(path: str, argument: str) -> None:
    """Raise `ValueError` naming `argument` when the output `path` (a file or folder) is, or lies inside, a saved model
    folder: a picture or JSON written there changes what the folder holds and what `push_to_hub` uploads with the
    model (a sample grid named `reconstructions.png` replaced a tokenizer's card picture)."""
    folder = saved_model_folder(path)
    if folder is not None:
        raise ValueError(f"`{argument}` {path!r} is inside the saved model folder {folder!r}: it would change what "
                         "that model holds (its card's pictures, the files `push_to_hub` uploads). Write it elsewhere.")


def _inside(resolved: str, folder: str) -> bool:
    """Whether the resolved path `resolved` lies below the existing folder `folder` (links and `..` resolved)."""
    return os.path.isdir(folder) and resolved.startswith(os.path.realpath(folder) + os.sep)


def check_output_file(path: str, argument: str = "output", **input_folders: str | list[str] | None) -> None:
    """`check_output_dir` for a file: its folder can be made and `path` is not a folder, nor inside one of
    `input_folders` (argument name -> folder or folders the run reads and rewrites), nor a file of a saved model (its
    config, weights, metrics or code: the model would no longer load) or anything else inside a saved model folder
    (`check_outside_models`)."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"`{argument}` must be a file path, got {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"`{argument}` {path!r} is a folder, not a file.")
    out = os.path.realpath(path)
    for name, folders in input_folders.items():
        for folder in [folders] if isinstance(folders, str) else folders or []:
            if isinstance(folder, str) and _inside(out, folder):
                raise ValueError(f"`{argument}` {path!r} is inside the `{name}` folder {folder!r}, which the run reads "
                                 "and rewrites. Write it elsewhere.")
    folder, file = os.path.split(out)
    if os.path.isfile(path) and os.path.isfile(os.path.join(folder, "config.json")) and (
        file == "config.json" or file.endswith((".safetensors", ".safetensors.index.json", "_metrics.json", ".py"))
        or file in ("generation_config.json", "run_config.json")
    ):
        raise ValueError(f"`{argument}` {path!r} is a file of the saved model in {folder!r}: writing it would break "
                         "or misdescribe that model. Write it elsewhere.")
    check_outside_models(path, argument)
    _check_writable_ancestor(os.path.dirname(os.path.abspath(path)), path, argument, "written")
    if os.path.exists(path):
        try:
            with open(path, "r+b"):  # opened for writing, left unchanged
                pass
        except OSError as error:
            raise ValueError(f"`{argument}` {path!r} cannot be written ({type(error).__name__}: "
                             f"{error.strerror or error}).") from None


def _check_writable_ancestor(start: str, path: str, argument: str, what: str) -> None:
    """The nearest existing folder at or above `start` (absolute) must be a folder where a file can really be made
    (a probe file is made and removed: `os.access` says yes to root on read-only and virtual file systems such as
    /sys), or `path` cannot be `what` (made, written). Called before any work, so that none is done for nothing."""
    existing = start
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"`{argument}` {path!r} cannot be {what}: {existing!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"`{argument}` {path!r} cannot be {what}: {existing!r} is not writable.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"`{argument}` {path!r} cannot be {what}: nothing can be written in {existing!r} "
                         f"({type(error).__name__}: {error.strerror or error}).") from None


def checkpoint_path(checkpoints_dir: str, name: str) -> str:
    """`checkpoints_dir/name` where that folder exists, else `name` itself (a path or a Hub repo id)."""
    local = os.path.join(checkpoints_dir, name)
    return local if os.path.isdir(local) else name


STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _safetensors_files(folder: str) -> list[str]:
    """The weights files of a saved model folder, by name (hidden ones, e.g. an interrupted write, left out)."""
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and not f.startswith("."))


def check_weights_folder(folder: str, argument: str = "folder") -> list[str]:
    """The safetensors files of the model folder `folder`; `ValueError` naming `argument` when it is not a folder
    with config.json and undamaged .safetensors weights."""
    if not isinstance(folder, str) or not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"`{argument}` {folder!r} is not a model folder (no config.json).")
    files = _safetensors_files(folder)
    if not files:
        raise ValueError(f"`{argument}` {folder!r} holds no .safetensors weights.")
    damaged = damaged_safetensors(folder)
    if damaged:
        raise ValueError(f"`{argument}` {folder!r}: {damaged_weights_message(folder, damaged)}")
    return files


def compact_weights(folder: str, dtype: str = "float16", argument: str = "folder") -> dict:
    """Store the floating-point weights of the model folder `folder` in `dtype` ("float16" or "bfloat16"), halving
    its safetensors files; config.json is left as it is, so `from_pretrained` still builds the model in the dtype the
    config names (float32: the weights are widened on load, to values exactly representable in `dtype`).

    For drafts and students this changes nothing that matters for the product: speculative sampling is exact for any
    draft, only its acceptance can move (measure it). Raises `ValueError` naming `argument` for a folder without
    config.json and safetensors weights, and naming the tensor when a weight does not fit `dtype` (no file is
    rewritten then). Files are replaced atomically. Returns the sizes before and after and the largest change of a
    weight.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"`dtype` must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}.")
    target = STORAGE_DTYPES[dtype]
    files = check_weights_folder(folder, argument)
    compacted, before, max_change = {}, 0, 0.0
    for name in files:  # every tensor is checked before any file is rewritten
        path = os.path.join(folder, name)
        before += os.path.getsize(path)
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        for key, tensor in tensors.items():
            # float32/64 narrow; the other 16-bit kind converts (asked for bfloat16, a float16 file stayed float16)
            if not tensor.is_floating_point() or tensor.dtype == target or torch.finfo(tensor.dtype).bits < 16:
                continue
            narrow = tensor.to(target)
            if not torch.isfinite(narrow).all() and torch.isfinite(tensor).all():
                raise ValueError(f"`{argument}` {folder!r}: weight {key!r} in {name} holds values beyond {dtype}'s "
                                 f"range (largest {tensor.abs().max().item():.3g}); keep this model in "
                                 f"{str(tensor.dtype).removeprefix('torch.')}.")
            max_change = max(max_change, (narrow.to(tensor.dtype) - tensor).abs().max().item() if tensor.numel() else 0.0)
            tensors[key] = narrow
        compacted[name] = (tensors, {**metadata, "format": "pt"})
    index_file = os.path.join(folder, "model.safetensors.index.json")
    index = None
    if os.path.isfile(index_file):  # a sharded checkpoint: its index states the weights' total size in bytes
        with open(index_file) as f:
            index = json.load(f)
        index.setdefault("metadata", {})["total_size"] = sum(
            t.numel() * t.element_size() for tensors, _ in compacted.values() for t in tensors.values())
    for name, (tensors, metadata) in compacted.items():
        _replace_atomically(os.path.join(folder, name), lambda path: save_file(tensors, path, metadata=metadata))
    if index is not None:
        _replace_atomically(index_file, lambda path: _write_json(index, path))
    after = sum(os.path.getsize(os.path.join(folder, name)) for name in files)
    return {"bytes_before": before, "bytes_after": after, "max_abs_change": max_change}


def _replace_atomically(path: str, write) -> None:
    """`write(temporary)` next to `path`, then rename it over `path`: a kill leaves the old file or the new one."""
    handle, temporary = tempfile.mkstemp(prefix=".compact-", suffix=os.path.splitext(path)[1], dir=os.path.dirname(path))
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_json(data, path: str) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def resolve_drafts(names: list[str], checkpoints_dir: str, notes: list[str]) -> list[str]:
    """The `drafts` (benchmarked or scored alone), each a folder under `checkpoints_dir`, an existing folder (absolute, or relative
    to the working directory) or a Hub repo id (`owner/name`); `load_draft` then refuses one that holds no draft.

    A size preset's name (`VQGPT_PRESETS`: `student-4L`, ...; the default list's students, which may not be trained
    yet) with no folder under `checkpoints_dir` is skipped with a warning and a note in `notes` (the results report
    it). Any other name raises `ValueError` naming `drafts`, before anything is sampled: a typo would otherwise
    vanish from the results without a word."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"`drafts` must be a list of draft names, got {names!r}.")
    kept = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"`drafts` must hold draft folder names, got {name!r} in {list(names)}.")
        if os.path.isdir(os.path.join(checkpoints_dir, name)) or os.path.isdir(name):
            kept.append(name)
        elif name in VQGPT_PRESETS:
            note = f"skipped draft {name!r}: no folder {os.path.join(checkpoints_dir, name)} (not trained yet?)"
            warnings.warn(note, stacklevel=3)
            notes.append(note)
        else:
            check_checkpoint_name(name, checkpoints_dir, "drafts")
            kept.append(name)  # a Hub repo id: load_draft downloads it or says why not
    return kept


def check_checkpoint_name(name: str, checkpoints_dir: str, argument: str) -> None:
    """`ValueError` naming `argument` unless `name` is a folder in `checkpoints_dir`, an existing folder path or a
    Hub repo id (`owner/name`): a typo of a folder name went to the Hub, retrying for half a minute offline."""
    if os.path.isdir(os.path.join(checkpoints_dir, name)) or os.path.isdir(name):
        return
    if os.path.exists(name) or os.path.exists(os.path.join(checkpoints_dir, name)):
        raise ValueError(f"`{argument}` {name!r} is a file, not a model folder.")
    if not _HUB_ID.fullmatch(name):
        available = (sorted(d for d in os.listdir(checkpoints_dir) if os.path.isdir(os.path.join(checkpoints_dir, d)))
                     if os.path.isdir(checkpoints_dir) else [])
        raise ValueError(f"`{argument}` {name!r} is neither a folder in {checkpoints_dir!r} ({', '.join(available) or 'none'}) "
                         "nor an existing folder path or a Hub repo id (owner/name).")


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def load_pretrained(cls, name: str, argument: str, device: str | torch.device | None = None, **kwargs):
    """`cls.from_pretrained(name, **kwargs)` in eval mode (on `device` if given), for a model folder or a Hub repo id.

    Raises `ValueError` naming `argument` (the option the user set) when `name` is neither a folder holding a
    `cls` nor a reachable repo id, or when its weights are damaged (naming the folder and the file).
    """
    if device is not None:  # before loading: torch's own errors ("Torch not compiled with CUDA") come after it
        from .bench.timing import check_device

        check_device(device)
    try:
        check_model_path(name, cls.__name__, kwargs.get("subfolder"))  # a file, or a local path that does not exist
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"`{argument}`: {error}") from None
    try:
        with warnings.catch_warnings():  # diffusers passes huggingface_hub an argument it deprecated: two lines of noise
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
            model = cls.from_pretrained(name, **kwargs)
    except RuntimeError as error:  # transformers: weights of other shapes than the config.json describes
        if "mismatched" not in str(error) and "size mismatch" not in str(error):
            raise
        has_config = not os.path.isdir(name) or os.path.exists(os.path.join(name, "config.json"))
        raise ValueError(f"`{argument}` {name!r} holds weights whose shapes do not fit "
                         f"{'its config.json' if has_config else 'the default config: it has no config.json'} "
                         f"(a {cls.__name__} saved with another configuration, or an edited config.json).") from None
    except (OSError, ValueError, SafetensorError) as error:
        folder = weights_folder(name)
        damaged = damaged_safetensors(folder) if folder else []
        if damaged:
            raise ValueError(f"`{argument}` {name!r}: {damaged_weights_message(folder, damaged)}") from None
        from huggingface_hub import constants
        from huggingface_hub.errors import HFValidationError

        reached = isinstance(error, ValueError) and not isinstance(error, HFValidationError)  # the repo answered
        if os.path.isdir(name) or reached:  # and the model refused (a wrong teacher, weights that do not fit, ...)
            reason = (str(error).strip().splitlines() or [""])[0][:300].rstrip(".")  # the first line says why
            what = "is a folder but holds" if os.path.isdir(name) else "is a Hub repo that holds"
            raise ValueError(f"`{argument}` {name!r} {what} no {cls.__name__} it can load ({type(error).__name__}"
                             f"{': ' + reason if reason else ''}).") from None

        offline = ("; HF_HUB_OFFLINE is set, so only what is already in the Hub cache loads, and this is not there"
                   if constants.HF_HUB_OFFLINE else "")
        raise ValueError(f"`{argument}` {name!r} is neither a model folder nor a reachable Hub repo id "
                         f"({type(error).__name__}){offline}.") from None
    return model.eval() if device is None else model.to(device).eval()


def load_draft(name: str, argument: str, teacher, device: str | torch.device | None = None):
    """A draft by folder or repo id: a `VQGPTForCausalLM`, or a `VQGPTFeatureDraft` (its config says which), which
    is loaded with `teacher` attached. Errors as `load_pretrained`."""
    from transformers import PreTrainedConfig

    from .models import VQGPTFeatureDraft, VQGPTFeatureDraftConfig, VQGPTForCausalLM

    try:
        model_type = PreTrainedConfig.get_config_dict(name)[0].get("model_type")
    except (OSError, ValueError):
        model_type = None  # load_pretrained below raises the clear error
    if model_type == VQGPTFeatureDraftConfig.model_type:
        return load_pretrained(VQGPTFeatureDraft, name, argument, device, teacher=teacher)
    return load_pretrained(VQGPTForCausalLM, name, argument, device)


# metric name -> (metric type, human name), as they appear in model-index
METRICS = {
    "val_loss": ("loss", "Validation cross-entropy"),
    "val_perplexity": ("perplexity", "Validation perplexity"),
    "alpha": ("acceptance_alpha", "Speculative acceptance alpha vs the teacher"),
    "speedup": ("speedup", "Speculative speedup vs plain decoding"),
    "fid": ("fid", "FID (classifier features)"),
    "inception_score": ("inception_score", "Inception score (classifier features)"),
    "val_psnr_db": ("psnr", "Reconstruction PSNR (dB)"),
}


def _vqgpt_description(model_dir: str, metrics: dict) -> str:
    """What a VQGPT folder is, from the metrics file its training wrote: `distill.py` writes distill_metrics.json,
    `train_teacher.py` training_metrics.json. A folder with neither is not called a teacher (a draft copied without
    its metrics was)."""
    if os.path.exists(os.path.join(model_dir, "distill_metrics.json")) or "alpha" in metrics:
        return "A draft model for speculative decoding."
    if os.path.exists(os.path.join(model_dir, "training_metrics.json")):
        return "The teacher model."
    return ("A VQGPT model (teacher or draft: its folder holds neither the `training_metrics.json` of "
            "`train_teacher.py` nor the `distill_metrics.json` of `distill.py`).")


def measured_here(recorded: str, working_directory: str | None, results_file: str, checkpoints_dir: str) -> bool:
    """Whether the `checkpoints_dir` a quality run recorded is `checkpoints_dir`. A relative record is read under the
    run's working directory when the results record it, else under each folder above the results file (runs before
    it was recorded, from the repository root): read under this process's own, it matched only from there."""
    target = os.path.realpath(checkpoints_dir)
    if os.path.isabs(recorded) or not recorded:
        return os.path.realpath(recorded) == target
    if working_directory:
        return os.path.realpath(os.path.join(working_directory, recorded)) == target
    folder = os.path.dirname(os.path.realpath(results_file))
    while True:
        if os.path.realpath(os.path.join(folder, recorded)) == target:
            return True
        if os.path.dirname(folder) == folder:
            return os.path.realpath(recorded) == target
        folder = os.path.dirname(folder)


def quality_metrics(files: list[str], checkpoints_dir: str) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """`{model folder name: {"fid", "inception_score"}}` (a card's `extra_metrics`) from the `evaluate_quality` runs
    in `files` (their results.json) that measured `checkpoints_dir`, and `(file, the folder it measured)` for the
    others."""
    quality, skipped = {}, []
    for path in [f for f in files if f]:
        try:
            with open(path) as f:
                result = json.load(f)
            rows = {r["method"]: r for r in result["results"]}
            measured = result["args"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"`benchmark_results` {path!r} is not the results.json of scripts/evaluate_quality.py "
                             f"({type(error).__name__}: {error}).")
        if not measured_here(measured.get("checkpoints_dir", ""), result.get("working_directory"), path,
                             checkpoints_dir):
            skipped.append((path, measured.get("checkpoints_dir")))  # another checkpoint set's run
            continue
        for name, row in [(measured.get("teacher"), rows.get("teacher"))] + [
                (d, rows.get(f"{d} alone")) for d in measured.get("drafts") or []]:
            if name and row:
                quality[name] = {"fid": row["fid"], "inception_score": row["inception_score"]}
    return quality, skipped


def model_card(model_dir: str, repo_id: str, dataset: str = "scikit-learn digits", extra_metrics: dict | None = None,
               teacher_repo: str | None = None, draft_repo: str | None = None) -> ModelCard:
    """A `ModelCard` for the saved model in `model_dir` (a VQGPT teacher or draft, a feature draft or a VQ tokenizer),
    with the metrics its training wrote (and `extra_metrics`, e.g. FID or measured speedup) as `model-index` eval
    results. `ValueError` naming `model_dir` for any other folder (e.g. the FID classifier: an evaluation tool)."""
    if not os.path.isdir(model_dir):
        raise ValueError(f"`model_dir` {model_dir!r} is not a folder.")
    metrics = {}
    for name in ("training_metrics.json", "distill_metrics.json"):
        metrics.update(read_json_object(os.path.join(model_dir, name), "training record") or {})
    metrics.update(extra_metrics or {})
    config = read_json_object(os.path.join(model_dir, "config.json"), "model config")
    if config is None:
        raise ValueError(f"`model_dir` {model_dir!r} holds no config.json: it is not a saved model (save one with "
                         "`save_pretrained`).")
    is_tokenizer = config.get("_class_name") == "VQTokenizer"
    if not is_tokenizer and config.get("model_type") not in ("vqgpt", "vqgpt_feature_draft"):
        kind = config.get("_class_name") or config.get("model_type") or "no model type"
        raise ValueError(f"`model_dir` {model_dir!r} holds {kind!r}, not a VQGPT model, feature draft or VQ tokenizer: "
                         "there is no model card for it.")
    results = [
        EvalResult(task_type="image-generation" if not is_tokenizer else "image-to-image", dataset_type=dataset,
                   dataset_name=dataset, dataset_split="validation", metric_type=METRICS[key][0],
                   metric_name=METRICS[key][1], metric_value=value)
        for key, value in _card_metrics(metrics, model_dir).items()
    ]
    card_data = ModelCardData(library_name="hf-specdec", license="apache-2.0", model_name=repo_id,
                              tags=["speculative-decoding", "image-generation", "vq"], eval_results=results)
    table = "\n".join(["| metric | value |", "| --- | --- |"] + [f"| {r.metric_name} | {r.metric_value:.4g} |" for r in results])
    if not results:  # a copied or downloaded folder without its metrics files: no empty table
        table = "No measured results came with this folder (its training writes them to a `*_metrics.json`)."
    if is_tokenizer:
        side = config["sample_size"] // 2 ** (len(config["down_block_types"]) - 1)
        quantizer = ("an EMA codebook with dead-code restart" if config.get("use_ema")
                     else "a codebook trained by gradient (diffusers' quantizer)")
        return ModelCard.from_template(card_data, template_path=os.path.join(TEMPLATES, "vq_tokenizer.md"),
                                       repo_id=repo_id, model_name=repo_id, image_size=config["sample_size"], grid=f"{side}x{side}",
                                       codebook_size=config["num_vq_embeddings"], dataset=dataset, results=table,
                                       quantizer=quantizer)
    is_draft = "loss" in metrics  # distill.py's metrics
    if is_draft:
        unknown = "(not recorded)"  # a hand-edited or older record may lack some
        training = (f"Distilled from the teacher with the `{metrics['loss']}` objective, on-policy fraction lmbda="
                    f"{metrics.get('lmbda', unknown)}, data: {metrics.get('data_source', unknown)}, "
                    f"{metrics.get('steps', unknown)} steps.")
    elif metrics.get("steps") is not None:
        training = f"Next-code cross-entropy, {metrics['steps']} steps."
    else:
        training = "No training record (`training_metrics.json` or `distill_metrics.json`) came with this folder."
    parameters = metrics.get("parameters")
    if not _is_finite_number(parameters) or parameters < 1:  # a hand-edited record: count the weights instead
        parameters = _count_parameters(model_dir)
    parameters = f"{parameters / 1e6:.2f}M" if parameters else "an unknown number of"
    num_classes = config["num_classes"]
    prompt = "teacher.class_prompt([0, 1, 2, 3])" if num_classes else "teacher.class_prompt(batch_size=4)"
    if config.get("model_type") == "vqgpt_feature_draft":
        return ModelCard.from_template(
            card_data, template_path=os.path.join(TEMPLATES, "feature_draft.md"), repo_id=repo_id, model_name=repo_id,
            num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
            parameters=parameters, grid=f"{config['grid_h']}x{config['grid_w']}",
            codebook_size=config["codebook_size"], feature_layers=config["feature_layers"], dataset=dataset,
            training=training + (f" Draft steps unrolled in training: {metrics['ttt_steps']}."
                                 if metrics.get("ttt_steps") is not None else ""),
            results=table, teacher_repo=teacher_repo or "<the teacher's repo>", prompt=prompt)
    conditioning = (f"A class-conditional GPT over VQ image codes ({num_classes} classes + a null class for "
                    "classifier-free guidance)" if num_classes else
                    "An unconditional GPT over VQ image codes (every sequence starts with the null token)")
    return ModelCard.from_template(
        card_data, template_path=os.path.join(TEMPLATES, "vqgpt.md"), repo_id=repo_id, model_name=repo_id,
        description=_vqgpt_description(model_dir, metrics),
        conditioning=conditioning, num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
        parameters=parameters, grid=f"{config['grid_h']}x{config['grid_w']}",
        codebook_size=config["codebook_size"], dataset=dataset, training=training, results=table,
        # a draft is not its own teacher, nor a teacher its own draft: a placeholder where the other is not known
        teacher_repo=teacher_repo or ("<the teacher's repo>" if is_draft else repo_id),
        draft_repo=draft_repo or (repo_id if is_draft else "<a draft's repo>"),
        prompt=prompt,
    )


def json_safe(value):
    """`value` with every NaN or infinite float replaced by None (JSON's null): `json.dump` writes them as `NaN` and
    `Infinity`, which strict JSON readers (and the Hub's model-index) refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_json_object(path: str, what: str) -> dict | None:
    """The JSON object in `path`, None when there is no such file; `ValueError` naming the file when it is not
    JSON or not an object."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path!r} ({what}) is not readable JSON: {error}.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path!r} ({what}) must hold a JSON object of name: value pairs, got a "
                         f"{type(value).__name__}.")
    return value


def _card_metrics(metrics: dict, model_dir: str) -> dict:
    """The card's measured results: every `METRICS` entry with a finite number. A NaN or infinite loss (a diverged
    run) or a value that is not a number is left off the card with a warning, not published as `nan`."""
    kept, left_out = {}, []
    for key in METRICS:
        value = metrics.get(key)
        if value is None:
            continue
        if _is_finite_number(value):
            kept[key] = float(value)
        else:
            left_out.append(f"{key}={value!r}")
    if left_out:
        warnings.warn(f"model card of {model_dir!r}: {', '.join(left_out)} left off the card (not a finite number; "
                      "a diverged run?).", stacklevel=3)
    return kept


def _count_parameters(model_dir: str) -> int | None:
    """The number of weights in `model_dir`'s safetensors files, read from their headers (no tensor is loaded); None
    for a folder without weights."""
    from safetensors import safe_open

    names = _safetensors_files(model_dir)
    if not names:
        return None
    total = 0
    for name in names:
        with safe_open(os.path.join(model_dir, name), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def upload_plan(model_dir: str, argument: str = "model_dir") -> list[str]:
    """The files `push_model` uploads from `model_dir`: weights, configs, remote code, metrics and pictures;
    never training checkpoints (optimizer state) or anything pickled. `ValueError` naming `argument` for a folder that
    would upload a model nobody can load: no config.json, missing or damaged weights, or remote code its config's
    `auto_map` names but the folder lacks."""
    check_weights_folder(model_dir, argument)
    with open(os.path.join(model_dir, "config.json")) as f:
        auto_map = json.load(f).get("auto_map") or {}
    modules = sorted({f"{ref.split('--')[-1].split('.')[0]}.py" for refs in auto_map.values()
                      for ref in (refs if isinstance(refs, list) else [refs]) if isinstance(ref, str)})
    missing = [m for m in modules if not os.path.isfile(os.path.join(model_dir, m))]
    if missing:
        raise ValueError(f"`{argument}` {model_dir!r}: its config.json's `auto_map` names {missing}, which the folder "
                         "lacks: `trust_remote_code` loads would fail on the Hub. Copy them in (`save_pretrained` does).")
    missing = _missing_relative_imports(model_dir, modules)
    if missing:  # modeling_vqgpt.py imports generation_vqgpt.py: transformers fetches it too, or fails to load
        raise ValueError(f"`{argument}` {model_dir!r}: its remote code imports {missing}, which the folder lacks: "
                         "`trust_remote_code` loads would fail on the Hub (FileNotFoundError). Copy them in "
                         "(`save_pretrained` does).")
    keep = (".safetensors", ".json", ".py", ".png")
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(keep) and os.path.isfile(os.path.join(model_dir, f))
                   and not f.startswith("."))  # hidden: a killed compaction's or save's leftover, no part of the model
    unsafe = [f for f in os.listdir(model_dir) if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    if unsafe:
        raise ValueError(f"`model_dir` {model_dir!r} holds pickled files {unsafe}: only safetensors are pushed.")
    return files + ["README.md"]


def _missing_relative_imports(model_dir: str, modules: list[str]) -> list[str]:
    """The files that the remote-code `modules` of `model_dir` import relatively (`from .generation_vqgpt import
    ...`), followed through each other as transformers follows them, and that the folder lacks."""
    from transformers.dynamic_module_utils import get_relative_imports

    seen, todo, missing = set(), list(modules), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            missing.append(name)
            continue
        todo.extend(f"{module}.py" for module in get_relative_imports(path))
    return sorted(missing)


# What a push replaces in a repo it pushed to before: files of the kinds `upload_plan` uploads that this push does
# not hold (a `model.safetensors` of an earlier push next to this push's shards was the one transformers loaded).
REPLACED_ON_PUSH = (".safetensors", ".safetensors.index.json", ".json", ".py", ".png", ".bin", ".pt", ".pth", ".pkl",
                    ".ckpt")


def public_repos(repo_ids: list[str], token: str | None = None) -> list[str]:
    """Those of `repo_ids` that exist on the Hub and are public: a push asked to be private would upload there in
    public (the Hub keeps an existing repo's visibility). A push of several models checks them all before the first
    upload; `push_model` checks its own."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    api, public = HfApi(token=token), []
    for repo_id in repo_ids:
        try:
            if not api.repo_info(repo_id).private:
                public.append(repo_id)
        except RepositoryNotFoundError:  # a new repo: created private
            continue
    return public


def push_model(model_dir: str, repo_id: str, card: ModelCard, private: bool = False, token: str | None = None) -> str:
    """Create `repo_id` on the Hub and upload `model_dir` (see `upload_plan`) with `card` as its README, in one
    commit that also deletes the files of an earlier push that this one does not hold (model files only:
    `REPLACED_ON_PUSH`). `ValueError` when `private` is asked for a repo that exists and is public: the Hub keeps a
    repo's visibility on `create_repo(exist_ok=True)`, so the upload would have been public."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    files = upload_plan(model_dir)
    api = HfApi(token=token)
    if private and public_repos([repo_id], token):
        raise ValueError(f"`private`: the repo {repo_id!r} exists and is public, and pushing does not change that; "
                         "nothing was uploaded. Make it private first (`HfApi().update_repo_settings(repo_id, "
                         "private=True)` or the repo's settings page), or push without --private.")
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    card.validate()  # the Hub's check of the card's metadata, as `card.push_to_hub` ran it
    stale = [f for f in api.list_repo_files(repo_id) if f not in files and f.endswith(REPLACED_ON_PUSH)]
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=os.path.join(model_dir, f))
                  for f in files if f != "README.md"]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8")))
    operations += [CommitOperationDelete(path_in_repo=f) for f in stale]
    api.create_commit(repo_id, operations, commit_message="Upload with hf-specdec")
    return str(url)
