"""Model cards render from model_cards/ templates and round-trip with valid model-index eval results."""

import json

import pytest
from huggingface_hub import ModelCard

from hf_specdec.hub import model_card
from tests.utils import CHECKPOINTS, run_script


@pytest.mark.parametrize("name", ["teacher", "draft-1L", "feature-1L", "feature-2L", "feature-2L-wide", "vq-tokenizer"])
def test_cards_round_trip_with_eval_results(name, tmp_path):
    card = model_card(str(CHECKPOINTS / name), f"org/{name}", extra_metrics={"fid": 4.5} if name == "teacher" else None,
                      teacher_repo="org/teacher", draft_repo="org/draft-1L")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    metrics_file = "distill_metrics.json" if name in ("draft-1L", "feature-1L", "feature-2L", "feature-2L-wide") else "training_metrics.json"
    shipped = json.loads((CHECKPOINTS / name / metrics_file).read_text())  # the card carries the folder's metrics
    if name == "teacher":
        assert results["perplexity"] == pytest.approx(shipped["val_perplexity"], rel=1e-6) and results["fid"] == 4.5
        assert 'VQGPTForCausalLM.from_pretrained("org/teacher")' in loaded.text
    elif name == "draft-1L":
        assert results["acceptance_alpha"] == pytest.approx(shipped["alpha"], rel=1e-6)
        assert "assistant_model=draft" in loaded.text
    elif name.startswith("feature-"):  # loads with its teacher; says why assisted generation cannot use it
        assert results["acceptance_alpha"] == pytest.approx(shipped["alpha"], rel=1e-6)
        assert f'VQGPTFeatureDraft.from_pretrained("org/{name}", teacher=teacher)' in loaded.text
        assert 'VQGPTForCausalLM.from_pretrained("org/teacher")' in loaded.text and "cannot use" in loaded.text
    else:
        assert results["psnr"] == pytest.approx(shipped["val_psnr_db"], rel=1e-6)
    assert loaded.data.library_name == "hf-specdec" and "{{" not in loaded.text
    assert f"# org/{name}" in loaded.text


def test_a_folder_without_training_metrics_is_not_called_a_teacher(tmp_path):
    import shutil

    for name, metrics_file in (("draft-1L", "distill_metrics.json"), ("teacher", "training_metrics.json")):
        folder = tmp_path / name
        shutil.copytree(CHECKPOINTS / name, folder, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
        kept = model_card(str(folder), f"org/{name}").text
        assert ("A draft model" if name == "draft-1L" else "The teacher model.") in kept
        (folder / metrics_file).unlink()
        text = model_card(str(folder), f"org/{name}").text
        assert "The teacher model." not in text and "A draft model" not in text  # the draft was called a teacher
        assert "teacher or draft" in text and "distill_metrics.json" in text


def test_upload_plan_is_safetensors_only(tmp_path):
    import shutil

    from hf_specdec.hub import upload_plan

    model_dir = tmp_path / "draft"
    shutil.copytree(CHECKPOINTS / "draft-1L", model_dir, ignore=shutil.ignore_patterns("checkpoints"))
    (model_dir / "checkpoints").mkdir()
    (model_dir / "checkpoints" / "optimizer.safetensors").write_text("x")
    plan = upload_plan(str(model_dir))
    assert "model.safetensors" in plan and "README.md" in plan and "modeling_vqgpt.py" in plan
    assert not any("optimizer" in f or "checkpoints" in f for f in plan)
    (model_dir / "pytorch_model.bin").write_text("x")
    with pytest.raises(ValueError, match="pickled"):
        upload_plan(str(model_dir))


def test_push_script_dry_run_lists_every_model():
    result = run_script("push_to_hub.py", "--namespace", "org", "--dry_run")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("vq-tokenizer", "teacher", "student-4L", "draft-1L", "draft-2L", "feature-1L", "feature-2L", "feature-2L-wide"):
        assert f"org/digits-{name}:" in result.stdout
    assert "org/digits-classifier" not in result.stdout  # the FID classifier has no card
    # the dry run shows each card (hunt 8: it said it did, and printed none)
    assert '    | draft = VQGPTForCausalLM.from_pretrained("org/digits-draft-1L")' in result.stdout
    assert "card: teacher org/digits-teacher, draft org/digits-student-4L, FID 1.08" in result.stdout


def test_push_script_links_each_set_s_own_models_and_metrics():
    """The photographs: repos named after the set, each draft's card loads the teacher it was distilled from (the
    unconditional one for the unconditional draft), FID from that set's runs only, cards for unconditional models."""
    result = run_script("push_to_hub.py", "--namespace", "org", "--dry_run", "--checkpoints_dir",
                        str(CHECKPOINTS.parent / "photos"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "org/photos-draft-uncond-1L:" in out and "org/digits" not in out
    assert "card: teacher org/photos-teacher-uncond, draft org/photos-draft-uncond-1L, FID 16.74" in out
    assert "card: teacher org/photos-teacher-uncond, draft org/photos-draft-uncond-1L, FID 8.89" in out  # its teacher
    assert "card: teacher org/photos-teacher, draft org/photos-draft-1L, FID 7.34" in out
    card = model_card(str(CHECKPOINTS.parent / "photos" / "teacher-uncond"), "org/t", teacher_repo="org/t")
    assert "class_prompt(batch_size=4)" in card.text and "unconditional" in card.text and "0 classes" not in card.text
    with pytest.raises(ValueError, match="DigitsClassifier.*no model card"):
        model_card(str(CHECKPOINTS / "classifier"), "org/c")
    refused = run_script("push_to_hub.py", "--dry_run", "--models", "teacher", "classifier")
    assert refused.returncode != 0 and "classifier" in refused.stderr and "digits-teacher" not in refused.stdout
