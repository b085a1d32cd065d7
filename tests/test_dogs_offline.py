"""Mini-ImageNet dogs end to end, offline: a small dataset repo in the format of the default Hub dataset
(`timm/mini-imagenet`: parquet shards `data/<split>-*.parquet`, columns `image` and `label`, labels = ImageNet WordNet
ids) served by a Hub-API server on loopback, then `--dataset mini-imagenet-dogs --repo_id ...` through the dog filter,
the tokenizer, a few teacher steps, a few distillation steps and speculative sampling, with the recipe's own YAML
configs (configs/*/dogs*.yaml) and tiny sizes on the command line.

The images are real photographs (crops of the `photos` dataset's sources) under borrowed synset labels.
"""

import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image

from hf_specdec.data.photos import load_photographs
from tests.helpers.hub_server import serve_git_repos

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "org/mini-imagenet"
# synset -> source photograph; three dog synsets, and two others: a bird and the white wolf, the synset right after
# the dog range (n02085620..n02113978) in ImageNet's order
SYNSETS = {"n01532829": "flower", "n02099601": "chelsea", "n02108089": "coffee", "n02110341": "china",
           "n02114548": "rocket"}
DOGS = ["n02099601", "n02108089", "n02110341"]
PER_SPLIT = {"train": 12, "validation": 3, "test": 3}

README = """---
license: other
license_name: test-photographs
dataset_info:
  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names:
{names}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
  - split: test
    path: data/test-*
task_categories:
- image-classification
---
# A tiny Mini-ImageNet look-alike for tests: real photographs, borrowed synset labels.
"""


def make_mini_imagenet_repo(folder: Path, seed: int = 0) -> None:
    """`folder` laid out like `timm/mini-imagenet`: JPEG images of varied sizes in parquet shards, synset labels."""
    names = sorted(SYNSETS)
    photos = load_photographs()
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    rng = np.random.default_rng(seed)
    (folder / "data").mkdir(parents=True)
    for split, count in PER_SPLIT.items():
        rows = {"image": [], "label": []}
        for label, synset in enumerate(names):
            photo = photos[SYNSETS[synset]]
            for _ in range(count):
                w, h = rng.integers(48, 96, 2)
                side = rng.uniform(0.4, 1.0) * min(photo.size)
                x, y = rng.uniform(0, photo.width - side), rng.uniform(0, photo.height - side)
                crop = photo.resize((int(w), int(h)), box=(x, y, x + side, y + side))
                buffer = io.BytesIO()
                crop.save(buffer, format="JPEG", quality=90)
                rows["image"].append({"bytes": buffer.getvalue(), "path": None})
                rows["label"].append(label)
        Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    lines = "\n".join(f"          '{i}': {name}" for i, name in enumerate(names))
    (folder / "README.md").write_text(README.format(names=lines))


PIPELINE = textwrap.dedent(
    """
    import json, runpy, sys
    import torch
    root, tmp, repo_id = sys.argv[1:4]
    main = lambda name: runpy.run_path(f"{root}/scripts/{name}")["main"]
    common = ["--repo_id", repo_id, "--token_cache_dir", f"{tmp}/tokens", "--mixed_precision", "no",
              "--per_device_batch_size", "8", "--warmup_steps", "1", "--eval_every", "0", "--save_every", "0",
              "--log_every", "1"]
    main("train_vqvae.py")([f"{root}/configs/vqvae/dogs.yaml", *common, "--output_dir", f"{tmp}/vq",
        "--block_out_channels", "32", "32", "32", "--latent_channels", "8", "--vq_embed_dim", "8",
        "--codebook_size", "64", "--layers_per_block", "1", "--max_steps", "2"])
    main("train_teacher.py")([f"{root}/configs/teacher/dogs.yaml", *common, "--tokenizer_path", f"{tmp}/vq",
        "--output_dir", f"{tmp}/teacher", "--unconditional", "false", "--hidden_size", "32",
        "--num_attention_heads", "2", "--max_steps", "3"])
    main("distill.py")([f"{root}/configs/distill/dogs-draft.yaml", *common, "--tokenizer_path", f"{tmp}/vq",
        "--teacher_path", f"{tmp}/teacher", "--output_dir", f"{tmp}/draft", "--num_teacher_samples", "16",
        "--num_alpha_prefixes", "8", "--max_steps", "2"])

    from hf_specdec import VQGPTForCausalLM, VQTokenizer, speculative_sample
    from hf_specdec.data import load_image_dataset
    from hf_specdec.pipeline import class_prompts, decode_sequences
    splits = load_image_dataset("mini-imagenet-dogs", repo_id=repo_id)
    teacher = VQGPTForCausalLM.from_pretrained(f"{tmp}/teacher").eval()
    draft = VQGPTForCausalLM.from_pretrained(f"{tmp}/draft").eval()
    tokenizer = VQTokenizer.from_pretrained(f"{tmp}/vq").eval()
    prompt = class_prompts(teacher, 3)
    out = speculative_sample(teacher, draft, prompt, gamma=8, generator=torch.Generator().manual_seed(0))
    images = decode_sequences(tokenizer, out.sequences, teacher.config)
    with open(f"{tmp}/draft/distill_metrics.json") as f:
        alpha = json.load(f)["alpha"]
    with open(f"{tmp}/teacher/training_metrics.json") as f:
        entropy = json.load(f)["entropy_per_token"]
    print("REPORT " + json.dumps({
        "classes": splits["train"].features["label"].names,
        "rows": {name: len(split) for name, split in splits.items()},
        "num_classes": teacher.config.num_classes, "grid": [teacher.config.grid_h, teacher.config.grid_w],
        "codebook_size": teacher.config.codebook_size, "sequences": list(out.sequences.shape),
        "prompt": prompt[:, 0].tolist(), "alpha": out.alpha, "distill_alpha": alpha, "entropy": entropy,
        "images": list(images.shape), "finite": bool(torch.isfinite(images).all())}))
    """
)


@pytest.fixture(scope="module")
def mini_imagenet_hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dogs-hub")
    make_mini_imagenet_repo(tmp / "repo")
    with serve_git_repos(tmp, {f"datasets/{REPO_ID}": tmp / "repo"}, probe=f"datasets/{REPO_ID}") as endpoint:
        yield {"endpoint": endpoint, "tmp": tmp}


def test_mini_imagenet_dogs_recipe_end_to_end_from_a_loopback_hub(mini_imagenet_hub):
    tmp = mini_imagenet_hub["tmp"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=mini_imagenet_hub["endpoint"], HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", PIPELINE, str(ROOT), str(tmp / "run"), REPO_ID], cwd=tmp,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.split("REPORT ", 1)[1])
    assert report["classes"] == DOGS  # the finch and the wolf are filtered out, the dogs relabelled 0..2
    assert sum(report["rows"].values()) == len(DOGS) * sum(PER_SPLIT.values())
    assert report["num_classes"] == len(DOGS) and report["codebook_size"] == 64
    assert report["grid"] == [16, 16]  # configs/vqvae/dogs.yaml: 64x64 -> 16x16 tokens
    assert report["sequences"] == [3, 1 + 256]
    assert report["prompt"] == [64, 65, 66]  # one class token per dog class after the 64 codes
    assert 0.0 <= report["alpha"] <= 1.0 and 0.0 < report["distill_alpha"] <= 1.0
    assert 0.0 < report["entropy"] <= math.log(64) + 1e-4  # the teacher's entropy per token on its own samples
    assert report["images"] == [3, 3, 64, 64] and report["finite"]

