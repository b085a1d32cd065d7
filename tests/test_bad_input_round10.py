"""Bad and unusual input from the eleventh and twelfth reliability hunts, and the classifier's run lock."""

import socket
import subprocess

import pytest

from tests.utils import run_script


def test_two_classifier_runs_in_one_folder_are_refused(tmp_path, monkeypatch):
    """train_classifier.py had the saved-model guard but no run lock: two runs into one folder both trained and
    wrote over each other's classifier, whose features define every FID/IS figure."""
    import hf_specdec.data as data

    def loaded(*args, **kwargs):
        raise AssertionError("the data loaded before the folder was claimed")

    other = subprocess.Popen(["sleep", "60"])  # a live process of this machine holds the folder
    try:
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / ".run.lock").write_text(f"{socket.gethostname()} {other.pid}")
        monkeypatch.setattr(data.DataArguments, "load", loaded)
        result = run_script("train_classifier.py", "--epochs", "1", "--output_dir", tmp_path)
        assert result.returncode == 2 and f"is in use by another run (process {other.pid}" in result.stderr, \
            result.stderr[-2000:]
    finally:
        other.kill()
        other.wait()
    monkeypatch.undo()
    result = run_script("train_classifier.py", "--epochs", "1", "--output_dir", tmp_path)  # holder gone: taken over
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / ".run.lock").exists() and (tmp_path / "diffusion_pytorch_model.safetensors").exists()
