"""Bad and unusual input from the eighth reliability hunt (training, metrics, the Hub's cards): a checkpoint of
another kind of run resumed, a finished run's metrics overwritten, options no setting reads, intervals outside a
metric's range, cards that named a draft its own teacher."""

import json
import shutil
import warnings

import pytest
import torch

from hf_specdec.training import TrainingArguments, train
from tests.conftest import tiny_model
from tests.utils import CHECKPOINTS, run_script


def tiny_run(tmp_path, run_config, eval_calls, max_steps=2, resume=None):
    batch = torch.cat([16 + torch.arange(8)[:, None] % 3, torch.randint(0, 16, (8, 16))], dim=1)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_batch_size=4, eval_every=0,
                             save_every=1, log_every=1, warmup_steps=1, resume_from_checkpoint=resume)
    eval_fn = lambda model, step: eval_calls.append(step) or {"val_loss": 1.0}  # noqa: E731
    return train(tiny_model(0), list(batch), lambda m, ids, s: (m(ids, labels=ids, use_cache=False).loss, {}), args,
                 collate_fn=torch.stack, eval_fn=eval_fn, run_config=run_config)


def test_a_checkpoint_of_another_kind_of_run_is_refused(tmp_path):
    """A distillation resumed from a teacher run's checkpoint (their groups of settings never met, their trainer
    settings agreed): the 'student' was the scratch teacher, alpha 0.24 against 0.50."""
    teacher_run = {"model": {"preset": "student-4L"}, "data": {"dataset": "digits"}}
    tiny_run(tmp_path, teacher_run, [])
    with pytest.raises(ValueError, match=r"written by another kind of run \(its settings: model; this run's: distill\)"):
        tiny_run(tmp_path, {"distill": {"loss": "tv"}, "data": {"dataset": "digits"}}, [], max_steps=3, resume="latest")
    tiny_run(tmp_path, teacher_run, [], max_steps=3, resume="latest")  # the same kind resumes


def test_resuming_a_finished_run_evaluates_instead_of_writing_empty_metrics(tmp_path):
    calls = []
    tiny_run(tmp_path, None, calls)
    assert calls == [2]
    tiny_run(tmp_path, None, calls, resume="latest")  # at max_steps already: no step, but the metrics are measured
    assert calls == [2, 2]


@pytest.mark.parametrize("make, words", [
    (lambda: __import__("hf_specdec.distill.distill", fromlist=["x"]).DistillArguments(student_layers=1, ttt_steps=5),
     "`ttt_steps` is read only with `feature_draft` true"),
    (lambda: __import__("hf_specdec.distill.distill", fromlist=["x"]).DistillArguments(student_layers=1,
                                                                                       feature_layers=[1, 2]),
     "`feature_layers` is read only with `feature_draft` true"),
    (lambda: __import__("hf_specdec.distill.distill", fromlist=["x"]).DistillArguments(student_layers=1,
                                                                                       num_teacher_samples=7),
     "`num_teacher_samples` is read only with `data_source` teacher"),
    (lambda: __import__("hf_specdec.training.tokenizer", fromlist=["x"]).TokenizerArguments(use_ema=False,
                                                                                            dead_code_threshold=3),
     "`dead_code_threshold` is read only with `use_ema` true"),
    (lambda: __import__("hf_specdec.training.teacher", fromlist=["x"]).TeacherArguments(unconditional=True,
                                                                                        class_dropout_prob=0.3),
     "`class_dropout_prob` is read only with `unconditional` false"),
])
def test_options_no_setting_reads_are_refused(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_warmup_as_long_as_the_run_is_not_warned_about():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainingArguments(output_dir="/tmp/x", max_steps=3, warmup_steps=3)


def test_a_draft_as_deep_as_its_teacher_is_warned_about(tmp_path):
    with pytest.warns(UserWarning, match="The student has 12 layers, its teacher 12: a draft as deep as its teacher"):
        result = run_script("distill.py", "configs/distill/digits-draft.yaml", "--student_preset", "teacher",
                            "--max_steps", "1", "--num_teacher_samples", "8", "--num_alpha_prefixes", "4",
                            "--per_device_batch_size", "4", "--warmup_steps", "1", "--eval_every", "0", "--save_every",
                            "0", "--output_dir", str(tmp_path / "d"), "--token_cache_dir", str(tmp_path / "tc"))
    assert result.returncode == 0, result.stderr[-2000:]


# -- metrics -------------------------------------------------------------------------------------------------------

def test_bootstrap_intervals_stay_in_the_metrics_range_and_check_their_inputs():
    from hf_specdec.metrics.quality import bootstrap, fid_with_ci, inception_score_with_ci

    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=g)
    value, (low, high) = fid_with_ci(a, a, rounds=5)  # a set against itself: FID 0, its interval not below
    assert value >= 0 and low >= 0 and high >= low
    score, (low, _) = inception_score_with_ci(torch.randn(6, 3, generator=g), rounds=5)
    assert score >= 1 and low >= 1
    statistic = lambda x: x.mean().item()  # noqa: E731
    for level in (95, 1.0, 0, True):
        with pytest.raises(ValueError, match="`level` must be a fraction in"):
            bootstrap(statistic, a, rounds=3, level=level)
    with pytest.raises(ValueError, match="sample 1 must be a finite 2-D tensor .* with NaN"):
        fid_with_ci(a, a.clone().fill_(float("nan")), rounds=3)
    with pytest.raises(ValueError, match="sample 0 must be a finite 2-D tensor"):
        fid_with_ci(a[0], a, rounds=3)
    with pytest.raises(ValueError, match=r"features of different widths \[4, 3\]"):
        fid_with_ci(a, a[:, :3], rounds=3)


def test_the_fid_metric_names_a_missing_classifier():
    from hf_specdec.bench.quality import load_metric

    images = (torch.rand(3, 3, 32, 32) * 2 - 1).numpy()
    with pytest.raises(ValueError, match="`classifier_path` is required"):
        load_metric("fid").compute(predictions=images, references=images)


def test_a_classifier_needs_two_classes():
    from hf_specdec.metrics.classifier import train_classifier

    with pytest.raises(ValueError, match="at least 2 classes, got 1"):
        train_classifier(torch.rand(4, 3, 32, 32) * 2 - 1, torch.zeros(4, dtype=torch.long), epochs=1)


# -- cards and compaction -------------------------------------------------------------------------------------------

def test_cards_of_folders_without_metrics_say_so_and_name_no_model_its_own_pair(tmp_path):
    from hf_specdec.hub import model_card

    for name in ("teacher", "draft-1L", "feature-1L"):
        shutil.copytree(CHECKPOINTS / name, tmp_path / name)
        for metrics in (tmp_path / name).glob("*_metrics.json"):
            metrics.unlink()
    teacher = model_card(str(tmp_path / "teacher"), "org/t").text
    assert "2.40M parameters" in teacher and "0.00M" not in teacher and "None steps" not in teacher
    assert "No measured results came with this folder" in teacher and "No training record" in teacher
    assert 'draft = VQGPTForCausalLM.from_pretrained("org/t")' not in teacher  # not its own draft
    feature = model_card(str(tmp_path / "feature-1L"), "org/f").text
    assert "0.28M parameters" in feature and "unrolled in training: None" not in feature
    assert 'teacher = VQGPTForCausalLM.from_pretrained("org/f")' not in feature  # not its own teacher
    draft = model_card(str(CHECKPOINTS / "draft-1L"), "org/d").text
    assert 'teacher = VQGPTForCausalLM.from_pretrained("org/d")' not in draft
    tokenizer_config = json.loads((CHECKPOINTS / "vq-tokenizer" / "config.json").read_text())
    assert tokenizer_config["use_ema"] and "EMA codebook" in model_card(str(CHECKPOINTS / "vq-tokenizer"), "org/v").text


def test_push_refuses_a_draft_whose_teacher_is_elsewhere_and_a_set_of_unknown_data(tmp_path):
    set_dir = tmp_path / "mine"
    shutil.copytree(CHECKPOINTS / "feature-1L", set_dir / "feature-1L")
    result = run_script("push_to_hub.py", "--namespace", "org", "--dry_run", "--checkpoints_dir", str(set_dir))
    assert result.returncode == 2 and "`dataset`: the set 'mine' is none of the shipped ones" in result.stderr
    metrics = json.loads((set_dir / "feature-1L" / "distill_metrics.json").read_text())
    (set_dir / "feature-1L" / "distill_metrics.json").write_text(json.dumps({**metrics, "teacher": "/gone/teacher"}))
    result = run_script("push_to_hub.py", "--namespace", "org", "--dry_run", "--checkpoints_dir", str(set_dir),
                        "--dataset", "my digits")
    assert result.returncode == 2 and "was distilled from '/gone/teacher'" in result.stderr
    (set_dir / "feature-1L" / "distill_metrics.json").write_text(json.dumps({**metrics, "teacher": "org/teacher"}))
    result = run_script("push_to_hub.py", "--namespace", "org", "--dry_run", "--checkpoints_dir", str(set_dir),
                        "--dataset", "my digits")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "card: teacher org/teacher, draft org/mine-feature-1L" in result.stdout  # the Hub teacher it names


def test_compacting_converts_between_16_bit_kinds_and_refuses_a_folder_twice(tmp_path):
    from safetensors import safe_open

    from hf_specdec.hub import compact_weights

    shutil.copytree(CHECKPOINTS / "draft-1L", tmp_path / "d")
    compact_weights(str(tmp_path / "d"), "float16")
    compact_weights(str(tmp_path / "d"), "bfloat16")  # stayed float16 and said it had done it
    with safe_open(str(tmp_path / "d" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.bfloat16}
    result = run_script("compact_checkpoints.py", "--folders", str(tmp_path / "d"), str(tmp_path / "d") + "/")
    assert result.returncode == 2 and "lists the same folder more than once" in result.stderr
