"""Bad and unusual input from the tenth reliability hunt (scripts and long runs): a diverged run that trained on and
saved NaN weights, a run over a saved model, a distillation that checked its resume settings after sampling the
teacher, empty and repeated benchmark lists, absolute paths, hidden leftovers in an upload, NaN in metrics files."""

import json
import os
import shutil

import pytest
import torch

from hf_specdec.hub import json_safe, upload_plan
from hf_specdec.training import TrainingArguments, train
from hf_specdec.training.trainer import check_output_free
from tests.conftest import tiny_model
from tests.utils import CHECKPOINTS, ROOT, run_script


def tiny_run(output_dir, loss_at, max_steps=3, **kwargs):
    batch = torch.cat([16 + torch.arange(8)[:, None] % 3, torch.randint(0, 16, (8, 16))], dim=1)
    args = TrainingArguments(output_dir=str(output_dir), max_steps=max_steps, per_device_batch_size=4, eval_every=0,
                             save_every=1, log_every=1, warmup_steps=1, **kwargs)

    def loss_fn(model, ids, step):
        loss = model(ids, labels=ids, use_cache=False).loss
        return loss_at.get(step, 1.0) * loss, {}

    return train(tiny_model(0), list(batch), loss_fn, args, collate_fn=torch.stack)


def test_a_diverged_run_stops_before_stepping_into_nan(tmp_path):
    """The run trained on with loss=nan, checkpointed NaN weights over the good ones and saved a NaN model."""
    with pytest.raises(ValueError, match=r"step 2: the training loss is nan .*the last checkpoint, .*checkpoint-1"):
        tiny_run(tmp_path, {1: float("nan")})
    checkpoints = sorted(os.listdir(tmp_path / "checkpoints"))
    assert checkpoints == ["checkpoint-1"]
    assert not (tmp_path / "model.safetensors").exists()
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "checkpoints" / "checkpoint-1" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    with pytest.raises(ValueError, match="step 1: the training loss is inf .*no checkpoint was written"):
        tiny_run(tmp_path / "other", {0: float("inf")})


def test_a_run_over_a_saved_model_is_refused(tmp_path):
    """A 2-step trial with a shipped config replaced the trained tokenizer, and every model trained on it broke."""
    folder = tmp_path / "model"
    shutil.copytree(CHECKPOINTS / "vq-tokenizer", folder)
    with pytest.raises(ValueError, match=r"already holds a saved model \(config.json, diffusion_pytorch_model"
                                         r".safetensors\).*--overwrite_output_dir true"):
        check_output_free(TrainingArguments(output_dir=str(folder)))
    check_output_free(TrainingArguments(output_dir=str(folder), overwrite_output_dir=True))
    check_output_free(TrainingArguments(output_dir=str(folder), resume_from_checkpoint="latest"))  # saves there too
    result = run_script("train_vqvae.py", "configs/vqvae/digits.yaml", "--max_steps", "1", "--output_dir", folder)
    assert result.returncode == 2 and "already holds a saved model" in result.stderr, result.stderr[-2000:]
    classifier = tmp_path / "classifier"  # the FID/IS features: replaced, every quality figure would change
    shutil.copytree(CHECKPOINTS / "classifier", classifier)
    result = run_script("train_classifier.py", "--epochs", "1", "--output_dir", classifier)
    assert result.returncode == 2 and "already holds a saved model" in result.stderr, result.stderr[-2000:]


def test_distillation_checks_resume_settings_before_sampling_the_teacher(tmp_path, monkeypatch):
    """The refusal came after the teacher had sampled every training sequence (minutes with the shipped config)."""
    import hf_specdec.distill.distill as distill

    def sampled(*args, **kwargs):
        raise AssertionError("the teacher sampled before the settings were checked")

    monkeypatch.setattr(distill, "sample_sequences", sampled)
    result = run_script("distill.py", "configs/distill/digits-draft.yaml", "--max_steps", "1",
                        "--num_teacher_samples", "4", "--per_device_batch_size", "8", "--num_alpha_prefixes", "4", "--warmup_steps", "1",
                        "--output_dir", str(tmp_path / "d"), "--token_cache_dir", str(tmp_path / "tc"))
    assert result.returncode == 2 and "is more than one epoch of 4 examples" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("make, words", [
    (lambda: __import__("hf_specdec.bench.speed", fromlist=["x"]).BenchmarkArguments(gammas=[]), "`gammas` is empty"),
    (lambda: __import__("hf_specdec.bench.speed", fromlist=["x"]).BenchmarkArguments(batch_sizes=[]),
     "`batch_sizes` is empty"),
    (lambda: __import__("hf_specdec.bench.engine_speed", fromlist=["x"]).EngineBenchmarkArguments(batch_sizes=[]),
     "`batch_sizes` is empty"),
    (lambda: __import__("hf_specdec.bench.model_size", fromlist=["x"]).ModelSizeArguments(sizes=[]), "`sizes` is empty"),
    (lambda: __import__("hf_specdec.bench.model_size", fromlist=["x"]).ModelSizeArguments(gammas=[4, 4]),
     r"`gammas` lists \[4\] more than once"),
])
def test_benchmark_lists_leave_a_row_to_time(make, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (their default output folders are relative)
    with pytest.raises(ValueError, match=words):
        make()


def test_summarize_checkpoints_counts_the_weights_from_any_path():
    """An absolute path (its parent folder is named `checkpoints`) gave 'Total weights: 0.0 MiB'."""
    relative = run_script("summarize_checkpoints.py", "checkpoints/digits")
    absolute = run_script("summarize_checkpoints.py", str(ROOT / "checkpoints" / "digits"))
    total = lambda result: result.stdout.split("Total weights: ")[1].split()[0]  # noqa: E731
    assert relative.returncode == absolute.returncode == 0
    assert total(absolute) == total(relative) and float(total(relative)) > 10


def test_hidden_leftovers_are_not_uploaded(tmp_path):
    folder = tmp_path / "draft-1L"
    shutil.copytree(CHECKPOINTS / "draft-1L", folder)
    shutil.copy(folder / "model.safetensors", folder / ".compact-k2j3.safetensors")  # a killed compaction's
    assert not any(name.startswith(".") for name in upload_plan(str(folder)))


def test_metrics_files_hold_strict_json():
    record = json_safe({"val_loss": float("nan"), "alpha": [0.5, float("inf")], "steps": 3})
    assert record == {"val_loss": None, "alpha": [0.5, None], "steps": 3}
    json.dumps(record, allow_nan=False)


def test_two_runs_in_one_folder_are_refused(tmp_path):
    """Both runs trained; one deleted the other's temporary checkpoint and died after its training."""
    import socket
    import subprocess

    other = subprocess.Popen(["sleep", "60"])  # a live process of this machine holds the folder
    try:
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / ".run.lock").write_text(f"{socket.gethostname()} {other.pid}")
        with pytest.raises(ValueError, match=rf"is in use by another run \(process {other.pid}"):
            tiny_run(tmp_path, {}, max_steps=1)
    finally:
        other.kill()
        other.wait()
    tiny_run(tmp_path, {}, max_steps=1)  # its holder is gone: taken over
    assert not (tmp_path / ".run.lock").exists()  # and released at the end
