"""The main job on the shipped checkpoints: a valid, readable PNG and both speedups. (Its bad input: tests/test_cli.py.)"""

import re

from PIL import Image

from hf_specdec.bench.sample_grid import SampleGridArguments, row_labels, run_sample_grid
from tests.utils import run_script, tiny_model, tiny_vq


def test_generate_on_shipped_checkpoints_reports_per_image_and_whole_grid_speedups(tmp_path):
    result = run_script("generate.py", "--classes", "0", "7", "--samples_per_class", "2", "--output", tmp_path / "grid.png")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 images" in result.stdout and "acceptance (block verification, not alpha) " in result.stdout
    per_image = re.search(r"per image \(batch 1, median\)\s+([\d.]+) ms\s+([\d.]+) ms\s+([\d.]+)x", result.stdout)
    whole = re.search(r"whole grid \(batch 4\)\s+([\d.]+) img/s\s+([\d.]+) img/s\s+([\d.]+)x", result.stdout)
    assert per_image and whole, result.stdout
    teacher_ms, method_ms, speedup = map(float, per_image.groups())
    assert abs(speedup - teacher_ms / method_ms) < 0.02 * speedup  # the ratio printed is the ratio of the times
    with Image.open(tmp_path / "grid.png") as grid:
        grid.verify()
    with Image.open(tmp_path / "grid.png") as grid:
        # 8x8-pixel digits upscaled to >= 64 px per cell, 2 rows of 2, a label column and a title line.
        assert grid.size[0] > 2 * 64 and grid.size[1] > 2 * 64


def _tiny_set(tmp_path, **overrides):
    teacher, draft = tiny_model(0, grid_h=8, grid_w=8, **overrides), tiny_model(1, grid_h=8, grid_w=8, num_hidden_layers=1, **overrides)
    for name, model in (("teacher", teacher), ("draft", draft), ("vq", tiny_vq())):
        model.save_pretrained(tmp_path / name)
    return dict(teacher=str(tmp_path / "teacher"), assistant=str(tmp_path / "draft"), tokenizer=str(tmp_path / "vq"))


def test_repeats_time_every_image_again_and_report_each_pass(tmp_path):
    paths = _tiny_set(tmp_path)
    result = run_sample_grid(SampleGridArguments(**paths, classes=[0, 1], samples_per_class=2, repeats=3,
                                                 gamma=3, output=str(tmp_path / "grid.png")))
    per_image = result["per_image"]
    assert len(per_image["speedup_per_pass"]) == 3 and all(x > 0 for x in per_image["speedup_per_pass"])
    assert per_image["timed_calls"] == 3 * 4  # every image in every pass
    assert abs(per_image["speedup"] - per_image["teacher_ms"] / per_image["method_ms"]) < 1e-9
    one = run_sample_grid(SampleGridArguments(**paths, classes=[0, 1], samples_per_class=2, gamma=3,  # default: one pass
                                              output=str(tmp_path / "one.png")))
    assert len(one["per_image"]["speedup_per_pass"]) == 1 and one["per_image"]["timed_calls"] == 4


def test_unconditional_teacher_draws_rows_of_null_prompts(tmp_path):
    paths = _tiny_set(tmp_path, num_classes=0)
    out = tmp_path / "uncond.png"
    result = run_sample_grid(SampleGridArguments(**paths, samples_per_class=3, rows=2, gamma=3, output=str(out)))
    assert result["images"] == 6 and result["whole_grid"]["batch_size"] == 6 and not result["whole_grid"]["streamed"]
    streamed = run_sample_grid(SampleGridArguments(**paths, samples_per_class=3, rows=2, gamma=3, batch_size=4,
                                                   output=str(out)))
    assert streamed["whole_grid"]["batch_size"] == 4 and streamed["whole_grid"]["streamed"]
    assert streamed["whole_grid"]["speedup"] > 0
    assert 0 <= result["alpha"] <= 1 and result["per_image"]["speedup"] > 0
    assert Image.open(out).size[1] > 2 * 64


def test_rows_are_labelled_with_the_teachers_class_names(tmp_path):
    teacher = tiny_model(0)
    assert row_labels(teacher, [0, 2]) == ["class 0", "class 2"]  # default LABEL_i names are not used
    teacher.config.id2label = {0: "cat", 1: "dog", 2: "fish"}
    assert row_labels(teacher, [0, 2]) == ["cat", "fish"]


def test_checkpoint_sets_by_name_and_overrides():
    args = SampleGridArguments(checkpoints="photos-uncond", output="x.png")
    assert args.teacher.endswith("teacher-uncond") and args.tokenizer.endswith("photos/vq-tokenizer")
    args = SampleGridArguments(checkpoints="photos", teacher="org/t", output="x.png")
    assert args.teacher == "org/t" and args.assistant.endswith("photos/draft-1L")
    result = run_script("generate.py", "--checkpoints", "imagenet")
    assert result.returncode == 2 and "checkpoints" in result.stderr and "photos-uncond" in result.stderr


def test_every_shipped_checkpoint_set_draws(tmp_path):
    for name, args in (("photos", ["--classes", "2"]), ("photos-uncond", ["--rows", "1"])):
        out = tmp_path / f"{name}.png"
        result = run_script("generate.py", "--checkpoints", name, *args, "--samples_per_class", "2", "--output", out)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "2 images" in result.stdout and "acceptance (block verification, not alpha) " in result.stdout and out.stat().st_size > 0


def test_main_job_takes_the_feature_draft_and_refuses_it_for_assisted_generation(tmp_path):
    import pytest

    from tests.utils import CHECKPOINTS

    feature = str(CHECKPOINTS / "feature-1L")  # loaded with the set's teacher attached
    result = run_sample_grid(SampleGridArguments(assistant=feature, classes=[3], samples_per_class=2, gamma=4,
                                                 output=str(tmp_path / "feature.png")))
    assert result["images"] == 2 and 0 < result["alpha"] <= 1 and result["per_image"]["speedup"] > 0
    with pytest.raises(ValueError, match="`assistant` .* feature-conditioned draft: `--method assisted`"):
        run_sample_grid(SampleGridArguments(assistant=feature, method="assisted", output=str(tmp_path / "a.png")))


def test_main_job_runs_block_verification_and_refuses_it_where_nothing_is_drafted(tmp_path):
    import pytest

    paths = _tiny_set(tmp_path)
    out = tmp_path / "block.png"
    result = run_sample_grid(SampleGridArguments(**paths, classes=[1], samples_per_class=2, gamma=5,
                                                 verification="block", output=str(out)))
    assert result["images"] == 2 and 0 <= result["alpha"] <= 1 and result["tokens_per_teacher_call"] >= 1
    assert result["whole_grid"]["speedup"] > 0 and out.stat().st_size > 0
    # block verification's accepted / tested is not the draft's alpha: the printout says which it is
    args = [a for k, v in paths.items() for a in (f"--{k}", v)] + ["--classes", "1", "--samples_per_class", "1",
                                                                   "--output", str(out)]
    for verification, label in (("block", "acceptance (block verification, not alpha) "), ("token", "acceptance alpha ")):
        printed = run_script("generate.py", *args, "--verification", verification)
        assert printed.returncode == 0 and label in printed.stdout, printed.stderr[-2000:]
    for method in ("assisted", "plain"):
        with pytest.raises(ValueError, match=f"`verification` 'block' is for `method` speculative .*{method!r}"):
            SampleGridArguments(**{**paths, "assistant": paths["assistant"] if method == "assisted" else None},
                                method=method, verification="block", output=str(out))


def test_each_checkpoint_set_brings_its_decoding_defaults_and_flags_replace_them(tmp_path):
    from hf_specdec.bench.sample_grid import CHECKPOINT_SETS

    out = str(tmp_path / "grid.png")
    for name, shipped in CHECKPOINT_SETS.items():
        args = SampleGridArguments(checkpoints=name, output=out)
        assert (args.gamma, args.verification) == (shipped.gamma, shipped.verification)
        args = SampleGridArguments(checkpoints=name, gamma=9, verification="token", output=out)
        assert (args.gamma, args.verification) == (9, "token")
        # transformers' assisted generation verifies token by token: the set's block default does not apply to it
        assert SampleGridArguments(checkpoints=name, method="assisted", output=out).verification == "token"
    assert SampleGridArguments(checkpoints="photos-uncond", method="self-speculative", output=out).verification == "block"
