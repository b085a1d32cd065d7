"""Nothing the project loads is unpickled: every model class refuses a pickled-only checkpoint, the shipped
checkpoints are safetensors, and the package source never calls an unpickler."""

import re
from pathlib import Path

import pytest
import torch

from hf_specdec.metrics.classifier import DigitsClassifier
from hf_specdec.models.palette_tokenizer import PaletteTokenizer
from hf_specdec.models.vq_tokenizer import VQTokenizer
from tests.utils import tiny_model, truncate

ROOT = Path(__file__).resolve().parents[1]


def models():
    return {
        "vqgpt": (tiny_model(), "model.safetensors", "pytorch_model.bin"),
        "vq-tokenizer": (VQTokenizer(block_out_channels=(32, 32, 32), num_vq_embeddings=16, latent_channels=8),
                         "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
        "palette": (PaletteTokenizer(num_colors=4), "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
        "classifier": (DigitsClassifier(channels=(8, 8)), "diffusion_pytorch_model.safetensors",
                       "diffusion_pytorch_model.bin"),
    }


@pytest.mark.parametrize("name", ["vqgpt", "vq-tokenizer", "palette", "classifier"])
def test_pickled_only_checkpoints_are_refused(name, tmp_path):
    model, safe_name, pickle_name = models()[name]
    model.save_pretrained(tmp_path)
    assert (tmp_path / safe_name).exists() and not list(tmp_path.glob("*.bin"))
    reloaded = type(model).from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))

    # the same weights as a pickle only (written here on purpose): loading must fail, not unpickle
    torch.save(model.state_dict(), tmp_path / pickle_name)
    (tmp_path / safe_name).unlink()
    with pytest.raises((OSError, EnvironmentError, ValueError)):
        type(model).from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["vqgpt", "vq-tokenizer", "palette", "classifier"])
def test_damaged_weights_name_the_folder_and_the_file(name, tmp_path):
    from hf_specdec.hub import load_pretrained

    model, safe_name, _ = models()[name]
    model.save_pretrained(tmp_path)
    truncate(tmp_path / safe_name)
    with pytest.raises(ValueError) as error:
        load_pretrained(type(model), str(tmp_path), "teacher")
    message = str(error.value)
    assert message.startswith(f"`teacher` {str(tmp_path)!r}") and str(tmp_path / safe_name) in message
    assert "download the model again" in message
    with pytest.raises(OSError, match=re.escape(str(tmp_path / safe_name))):
        type(model).from_pretrained(tmp_path)


def test_shipped_checkpoints_are_safetensors_only():
    files = [p for p in (ROOT / "checkpoints").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    pickled = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")]
    assert not pickled, pickled


def test_package_source_never_unpickles():
    unpickling = re.compile(r"\btorch\.load\(|\bpickle\.loads?\(|\bnp\.load\(|allow_pickle\s*=\s*True|"
                            r"\bjoblib\.load\(|\bsave_state\(|\bload_state\(|use_safetensors\s*=\s*False")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for folder in ("hf_specdec", "scripts") for path in (ROOT / folder).rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if unpickling.search(line)]
    assert not offenders, offenders
