"""Download path against a real Hub-API server on loopback (olah serving local git repos, offline mode):
every model type loads by repo id in a fresh process with identical weights, then again from the cache with
HF_HUB_OFFLINE=1; the main job runs on repo ids; unknown repo ids give a clear message.

Each served repo holds exactly what `push_model` would upload: `upload_plan` files plus the rendered model card.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData

from hf_specdec.hub import model_card, upload_plan
from tests.helpers.hub_server import serve_mirror
from tests.utils import CHECKPOINTS, HIDE_HF_SPECDEC, ROOT, free_port, python_env
# repo id -> (folder, class that loads it)
REPOS = {
    "org/digits-vq-tokenizer": (CHECKPOINTS / "vq-tokenizer", "hf_specdec.models.vq_tokenizer.VQTokenizer"),
    "org/digits-teacher": (CHECKPOINTS / "teacher", "hf_specdec.models.modeling_vqgpt.VQGPTForCausalLM"),
    "org/digits-draft-1L": (CHECKPOINTS / "draft-1L", "transformers.AutoModelForCausalLM"),
    "org/digits-classifier": (CHECKPOINTS / "classifier", "hf_specdec.metrics.classifier.DigitsClassifier"),
    "org/palette": (None, "hf_specdec.models.palette_tokenizer.PaletteTokenizer"),
    "org/digits-feature-1L": (None, "hf_specdec.models.modeling_feature_draft.VQGPTFeatureDraft"),
}
CARDS = ("org/digits-vq-tokenizer", "org/digits-teacher", "org/digits-draft-1L")  # the pushed models' real cards

LOAD_SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys
    import torch
    from huggingface_hub import ModelCard
    import hf_specdec  # registers VQGPT with the Auto classes
    repos = json.loads(sys.argv[1])
    report = {}
    for repo_id, (local, target) in repos.items():
        module, name = target.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        # a feature draft loads only with its teacher (from the Hub too)
        kwargs = {"teacher": hf_specdec.VQGPTForCausalLM.from_pretrained("org/digits-teacher")} if name == "VQGPTFeatureDraft" else {}
        hub, ref = cls.from_pretrained(repo_id, **kwargs), cls.from_pretrained(local, **kwargs)
        a, b = hub.state_dict(), ref.state_dict()
        report[repo_id] = {"class": type(hub).__name__, "tensors": len(a), "same_keys": a.keys() == b.keys(),
                           "identical": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)}
        card = ModelCard.load(repo_id)
        report[repo_id]["card"] = {r.metric_type: r.metric_value for r in card.data.eval_results or []}
    print("REPORT " + json.dumps(report))
    """
)


def _git_repo(folder: Path, files_from: Path, files: list[str], card) -> None:
    folder.mkdir(parents=True)
    for name in files:
        if name != "README.md":
            shutil.copy(files_from / name, folder / name)
    card.save(folder / "README.md")
    git = ["git", "-c", "user.name=hf-specdec", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "Upload with hf-specdec"]):
        subprocess.run(git + args, cwd=folder, check=True, capture_output=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.fail("git is needed to serve local repos with olah")
    tmp = tmp_path_factory.mktemp("hub")
    from hf_specdec.models.palette_tokenizer import PaletteTokenizer

    palette = PaletteTokenizer(num_colors=8, grid_size=4, image_size=16)
    with torch.no_grad():
        palette.palette.uniform_(-1, 1)  # any weights: the round trip must keep them bit for bit
    palette.save_pretrained(tmp / "palette-local")
    from hf_specdec import VQGPTForCausalLM
    from hf_specdec.models import make_feature_draft

    make_feature_draft(VQGPTForCausalLM.from_pretrained(CHECKPOINTS / "teacher")).save_pretrained(tmp / "feature-local")
    local = {}
    for repo_id, (folder, _) in REPOS.items():
        folder = folder or tmp / ("feature-local" if "feature" in repo_id else "palette-local")
        local[repo_id] = folder
        if repo_id in CARDS:
            card = model_card(str(folder), repo_id)
        else:
            card = ModelCard.from_template(ModelCardData(library_name="hf-specdec", license="apache-2.0"))
        _git_repo(tmp / "mirror" / "models" / repo_id, folder, upload_plan(str(folder)), card)
    with serve_mirror(tmp, probe="models/org/digits-teacher") as endpoint:
        yield {"endpoint": endpoint, "tmp": tmp, "local": local}


def _env(hub, **extra):
    env = {k: v for k, v in python_env().items() if not k.startswith("HF_HUB_OFFLINE")}
    return {**env, "HF_ENDPOINT": hub["endpoint"], "HF_HOME": str(hub["tmp"] / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", **extra}


def _load_all(hub, env):
    repos = {repo_id: (str(hub["local"][repo_id]), target) for repo_id, (_, target) in REPOS.items()}
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, json.dumps(repos)], cwd=hub["tmp"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("REPORT ", 1)[1])


def test_every_model_type_loads_by_repo_id_then_offline_from_the_cache(hub):
    online = _load_all(hub, _env(hub))
    assert set(online) == set(REPOS)
    for repo_id, row in online.items():
        assert row["identical"] and row["tensors"] > 0, (repo_id, row)
    assert online["org/digits-draft-1L"]["class"] == "VQGPTForCausalLM"  # AutoModelForCausalLM resolved it
    snapshots = hub["tmp"] / "hf-home" / "hub" / "models--org--digits-teacher" / "snapshots"
    (snapshot,) = snapshots.iterdir()
    assert (snapshot / "model.safetensors").exists() and (snapshot / "README.md").exists()
    shipped = lambda name, file: json.loads((CHECKPOINTS / name / file).read_text())  # noqa: E731
    assert online["org/digits-teacher"]["card"]["perplexity"] == pytest.approx(
        shipped("teacher", "training_metrics.json")["val_perplexity"], rel=1e-6)
    assert online["org/digits-draft-1L"]["card"]["acceptance_alpha"] == pytest.approx(
        shipped("draft-1L", "distill_metrics.json")["alpha"], rel=1e-6)
    assert online["org/digits-vq-tokenizer"]["card"]["psnr"] == pytest.approx(
        shipped("vq-tokenizer", "training_metrics.json")["val_psnr_db"], rel=1e-6)
    assert not list(snapshot.glob("*.bin")) and not (snapshot / "checkpoints").exists()

    # no server at all now: the endpoint points at a closed port, HF_HUB_OFFLINE=1 must serve from the cache
    offline = _load_all(hub, _env(hub, HF_HUB_OFFLINE="1", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"))
    assert offline == online


def test_remote_code_from_the_hub_without_hf_specdec(hub):
    script = HIDE_HF_SPECDEC + textwrap.dedent(
        """
        from transformers import AutoModelForCausalLM
        teacher = AutoModelForCausalLM.from_pretrained("org/digits-teacher", trust_remote_code=True).eval()
        draft = AutoModelForCausalLM.from_pretrained("org/digits-draft-1L", trust_remote_code=True).eval()
        assert type(teacher).__module__.startswith("transformers_modules"), type(teacher).__module__
        prompt = teacher.class_prompt([3])
        plain = teacher.generate(prompt, do_sample=False)
        assisted = teacher.generate(prompt, do_sample=False, assistant_model=draft)
        assert plain.shape[1] == 1 + teacher.config.grid_h * teacher.config.grid_w
        assert (plain == assisted).all()
        print("remote-ok")
        """
    )
    env = _env(hub, HF_MODULES_CACHE=str(hub["tmp"] / "modules"))
    result = subprocess.run([sys.executable, "-c", script], cwd=hub["tmp"], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote-ok" in result.stdout


def test_main_job_on_repo_ids_and_unknown_repo_ids(hub):
    def generate(*args):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), *args], cwd=ROOT, env=_env(hub),
                              capture_output=True, text=True, timeout=600)

    out = hub["tmp"] / "grid.png"
    result = generate("--teacher", "org/digits-teacher", "--assistant", "org/digits-draft-1L",
                      "--tokenizer", "org/digits-vq-tokenizer", "--classes", "0", "1", "--samples_per_class", "1",
                      "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "acceptance (block verification, not alpha) " in result.stdout and out.stat().st_size > 0

    for flag in ("--teacher", "--assistant", "--tokenizer"):
        result = generate(flag, "org/no-such-model", "--output", str(out))
        assert result.returncode != 0
        assert "org/no-such-model" in result.stderr and flag.strip("-") in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
