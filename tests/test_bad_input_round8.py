"""Bad and unusual input from the ninth reliability hunt: a folder that links back up its own tree, transformers'
assisted generation warping the assistant twice, `~` in paths, metrics files a card cannot use, codes outside the
codebook, options the chosen dataset does not read, the decoder's own arguments, statistics on too few rows, and
NumPy numbers."""

import json
import math
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from transformers.generation import logits_process

from hf_specdec import SpeculativeDecoder, VQGPTConfig
from hf_specdec.data.config import DataArguments
from hf_specdec.data.images import load_digits_dataset
from hf_specdec.data.photos import load_photos_dataset
from hf_specdec.hub import model_card
from hf_specdec.metrics.quality import fid_with_ci
from hf_specdec.models.vq_tokenizer import codebook_statistics
from tests.conftest import tiny_model
from tests.utils import CHECKPOINTS, run_script


def test_an_image_folder_that_links_back_up_its_tree_loads(tmp_path):
    """Two class folders each holding a link to the folder above: the walk for files `datasets` leaves out followed
    the links without end (2**40 paths) and the load never returned."""
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
        os.symlink("..", tmp_path / name / "up")

    code = (f"from hf_specdec.data.images import load_imagefolder; "
            f"s = load_imagefolder({str(tmp_path)!r}, val_fraction=0.2, test_fraction=0.2); "
            f"print(sum(len(x) for x in s.values()))")
    try:  # in a process of its own: a walk without end is killed, not waited for
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("load_imagefolder walked the linked folders without end")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "20"


def test_assisted_generation_warps_the_assistant_once(monkeypatch):
    """transformers hands the assistant the teacher's warpers next to the same settings and ran both: the draft was
    sampled at temperature T**2 (the second warper divided what the first returned)."""
    teacher, draft = tiny_model(0).eval(), tiny_model(1, num_hidden_layers=1).eval()
    inputs, outputs = [], []
    original = logits_process.TemperatureLogitsWarper.__call__

    def recorded(self, input_ids, scores):
        inputs.append(scores.clone())
        outputs.append(original(self, input_ids, scores).clone())
        return outputs[-1]

    monkeypatch.setattr(logits_process.TemperatureLogitsWarper, "__call__", recorded)
    teacher.generate(teacher.class_prompt([0]), do_sample=True, temperature=0.5, assistant_model=draft)
    assert len(inputs) > 16  # the draft's and the teacher's warping of a whole image
    warped_twice = [i for i, scores in enumerate(inputs) if any(torch.equal(scores, out) for out in outputs[:i])]
    assert warped_twice == []


@pytest.mark.parametrize("assisted", [False, True])
def test_generate_at_a_tiny_temperature_is_greedy(assisted):
    """1e-19 with an assistant (warped twice: 1e-38) and 1.2e-38 without one overflowed float32 to inf - inf and
    failed inside transformers; a vanishing temperature is the greedy decoder."""
    teacher, draft = tiny_model(0).eval(), tiny_model(1, num_hidden_layers=1).eval()
    extra = {"assistant_model": draft} if assisted else {}
    prompt = teacher.class_prompt([2])
    greedy = teacher.generate(prompt, do_sample=False, **extra)
    for temperature in (1e-19, 1.2e-38):
        torch.manual_seed(0)
        assert torch.equal(teacher.generate(prompt, do_sample=True, temperature=temperature, **extra), greedy)


def test_assisted_generation_refuses_beam_search():
    """transformers ran beam search and never called the draft, without a word."""
    teacher, draft = tiny_model(0).eval(), tiny_model(1, num_hidden_layers=1).eval()
    with pytest.raises(ValueError, match=r"`assistant_model` cannot be combined with beam search \(`num_beams`=2\)"):
        teacher.generate(teacher.class_prompt([0]), num_beams=2, do_sample=False, assistant_model=draft)


def test_numpy_integers_are_integers():
    teacher = tiny_model(0).eval()
    out = teacher.generate(teacher.class_prompt([0]), do_sample=False, max_new_tokens=np.int64(3))
    assert out.shape == (1, 4)
    config = VQGPTConfig(codebook_size=np.int64(16), grid_h=4, grid_w=4, hidden_size=32, num_attention_heads=2,
                         num_hidden_layers=np.int32(2), dropout=np.float32(0.25))
    saved = json.loads(config.to_json_string())  # NumPy numbers could not be written to config.json
    assert saved["num_hidden_layers"] == 2 and saved["codebook_size"] == 16 and saved["dropout"] == 0.25
    with pytest.raises(ValueError, match="`num_hidden_layers` must be a positive integer"):
        VQGPTConfig(num_hidden_layers=np.bool_(True))
    value, (low, high) = fid_with_ci(torch.randn(20, 4), torch.randn(20, 4), rounds=np.int64(3))
    assert 0 <= low <= value <= high


def test_a_home_relative_path_in_a_config_is_the_home_folder(tmp_path, monkeypatch):
    """`output: ~/x.png` in a YAML config (no shell to expand it) wrote into a folder named `~` in the working
    directory."""
    from hf_specdec.cli import parse_args
    from dataclasses import dataclass

    @dataclass
    class Paths:
        output: str = "out.png"
        other: str = "x"

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "c.yaml"
    config.write_text("output: ~/samples/x.png\n")
    (paths,) = parse_args((Paths,), [str(config)])
    assert paths.output == str(tmp_path / "home" / "samples" / "x.png")
    (paths,) = parse_args((Paths,), ["--output=~/y.png", "--other", "~/z"])
    assert paths.output == str(tmp_path / "home" / "y.png") and paths.other == str(tmp_path / "home" / "z")


def copied_teacher(tmp_path, metrics=None, raw=None):
    folder = tmp_path / "teacher"
    shutil.copytree(f"{CHECKPOINTS}/teacher", folder, ignore=shutil.ignore_patterns("*_metrics.json"))
    if metrics is not None:
        (folder / "training_metrics.json").write_text(json.dumps(metrics))
    if raw is not None:
        (folder / "training_metrics.json").write_text(raw)
    return str(folder)


def test_a_card_leaves_out_what_is_not_a_finite_number(tmp_path):
    """A diverged run's NaN loss was published as `value: .nan`; a parameter count stored as a string raised a
    TypeError."""
    folder = copied_teacher(tmp_path, {"val_loss": float("nan"), "val_perplexity": 30.0, "steps": 3,
                                       "parameters": "2397440"})
    with pytest.warns(UserWarning, match=r"val_loss=nan left off the card"):
        card = str(model_card(folder, "me/teacher"))
    assert "nan" not in card.lower()
    assert "| Validation perplexity | 30 |" in card
    assert "2.40M parameters" in card  # counted from the weights, not the string


@pytest.mark.parametrize("raw, words", [("[1, 2]", "must hold a JSON object"), ("{", "is not readable JSON")])
def test_a_card_names_a_metrics_file_it_cannot_read(tmp_path, raw, words):
    with pytest.raises(ValueError, match=words):
        model_card(copied_teacher(tmp_path, raw=raw), "me/teacher")


def test_a_card_needs_a_saved_model(tmp_path):
    folder = copied_teacher(tmp_path)
    os.remove(os.path.join(folder, "config.json"))
    with pytest.raises(ValueError, match="holds no config.json"):
        model_card(folder, "me/teacher")
    with pytest.raises(ValueError, match="is not a folder"):
        model_card(str(tmp_path / "missing"), "me/teacher")


def test_codebook_statistics_take_codes_only():
    """A generated sequence with its class token gave perplexity 17 on 16 codes; code 99 spread the histogram over
    100 bins."""
    codes = torch.arange(16).repeat(4)
    assert codebook_statistics(codes, 16)["usage"] == 1.0
    for bad, words in [(torch.tensor([0, 16]), r"codes in \[0, 16\), got values in \[0, 16\]"),
                       (torch.tensor([-1, 3]), r"codes in \[0, 16\)"),
                       (torch.tensor([0.5]), "integer tensor"),
                       (torch.tensor([], dtype=torch.long), "no code")]:
        with pytest.raises(ValueError, match=words):
            codebook_statistics(bad, 16)


def test_crops_per_photo_is_read_only_for_photos():
    with pytest.raises(ValueError, match="`crops_per_photo` is read only with `dataset` photos"):
        DataArguments(dataset="digits", crops_per_photo=50)
    assert DataArguments(dataset="photos", crops_per_photo=50).crops_per_photo == 50


def test_crops_per_photo_for_digits_fails_before_any_work():
    result = run_script("precompute_tokens.py", "--dataset", "digits", "--crops_per_photo", "50")
    assert result.returncode == 2 and "`crops_per_photo` is read only with `dataset` photos" in result.stderr


def test_the_decoders_own_arguments_are_checked():
    teacher, draft = tiny_model(0).eval(), tiny_model(1, num_hidden_layers=1).eval()
    with pytest.raises(ValueError, match="`compile_options` must be a dict"):
        SpeculativeDecoder(teacher, draft, gamma=3, compile_options=["x"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['freez_weights'\] \(did you mean 'freeze_weights'\?\)"):
        SpeculativeDecoder(teacher, draft, gamma=3, mode="eager", compile_options={"freez_weights": True})
    decoder = SpeculativeDecoder(teacher, draft, gamma=3, mode="eager")
    with pytest.raises(ValueError, match=r"`gamma` of a round must be an integer in \[0, 3\]"):
        decoder.round(5)
    with pytest.raises(ValueError, match="`repeats` must be an integer >= 1"):
        decoder.calibrate_cost_ratio(0)


@pytest.mark.parametrize("rows", [0, 1])
def test_fid_needs_two_rows(rows):
    with pytest.raises(ValueError, match=f"sample 0 has {rows} row"):
        fid_with_ci(torch.randn(rows, 4), torch.randn(20, 4), rounds=3)


def test_an_overflowing_statistic_is_refused():
    with pytest.raises(ValueError, match="overflowed"):  # squares past float64's 1.8e308
        fid_with_ci(torch.randn(20, 4, dtype=torch.float64) * 1e160, torch.randn(20, 4), rounds=3)
    value, (low, high) = fid_with_ci(torch.randn(20, 4) * 1e20, torch.randn(20, 4), rounds=3)  # float64 holds it
    assert math.isfinite(value) and value > 1e39 and 0 <= low <= value <= high < math.inf


def test_the_unrolled_feature_draft_needs_a_step():
    from hf_specdec.models.modeling_feature_draft import make_feature_draft

    teacher = tiny_model(0).eval()
    draft = make_feature_draft(teacher, 1)
    ids = torch.cat([teacher.class_prompt([0]), torch.zeros(1, 4, dtype=torch.long)], dim=1)
    for steps in (0, -1, 1.5):
        with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
            draft.unrolled_logits(ids, steps=steps)


@pytest.mark.parametrize("load, kwargs, words", [
    (load_photos_dataset, {"resolution": 32.0}, "`resolution` must be an integer >= 8, got 32.0"),
    (load_photos_dataset, {"crops_per_photo": 20.0}, "`crops_per_photo` must be an integer >= 10"),
    (load_photos_dataset, {"seed": -1}, r"`seed` must be an integer in \[0, 2\*\*32\)"),
    (load_photos_dataset, {"min_scale": 0.001}, "`min_scale` 0.001 makes the smallest crop 0 px"),
    (load_digits_dataset, {"resolution": 16.5}, "`resolution` must be an integer >= 8"),
    (load_digits_dataset, {"seed": 2.0}, "`seed` must be an integer"),
])
def test_the_loaders_check_their_numbers(load, kwargs, words):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=words):
            load(**kwargs)
