"""Bad and unusual input from the seventh reliability hunt: outputs written into the model folders a run reads (and
pushed with them), options a quick run or a duplicate dropped without a word, paths relative to another folder, a
draft left in training mode, a feature draft in another dtype than its teacher."""

import shutil
import warnings

import pytest
import torch

from hf_specdec import VQGPTFeatureDraft, speculative_sample
from hf_specdec.models import make_feature_draft
from tests.conftest import tiny_model
from tests.utils import CHECKPOINTS, ROOT, run_python


# -- outputs never land in a model folder ------------------------------------------------------------------------

@pytest.mark.parametrize("inside", ["vq-tokenizer/reconstructions.png", "teacher/samples.png", "draft-1L/x/grid.png"])
def test_the_main_job_never_writes_into_a_model_folder(tmp_path, inside):
    """`generate.py --output <tokenizer>/reconstructions.png` replaced the tokenizer's card picture with samples (exit
    0), and push_to_hub uploads every picture of a model folder."""
    from hf_specdec.bench.sample_grid import SampleGridArguments

    for name in ("teacher", "draft-1L", "vq-tokenizer"):
        shutil.copytree(CHECKPOINTS / name, tmp_path / name)
    before = (tmp_path / "vq-tokenizer" / "reconstructions.png").read_bytes()
    with pytest.raises(ValueError, match=r"`output` .* is inside the saved model folder .*push_to_hub"):
        SampleGridArguments(teacher=str(tmp_path / "teacher"), assistant=str(tmp_path / "draft-1L"),
                            tokenizer=str(tmp_path / "vq-tokenizer"), output=str(tmp_path / inside))
    assert (tmp_path / "vq-tokenizer" / "reconstructions.png").read_bytes() == before
    SampleGridArguments(teacher=str(tmp_path / "teacher"), assistant=str(tmp_path / "draft-1L"),
                        tokenizer=str(tmp_path / "vq-tokenizer"), output=str(tmp_path / "grid.png"))  # beside: fine


def test_benchmark_results_never_go_into_a_model_folder(tmp_path):
    from hf_specdec.bench.engine_speed import EngineBenchmarkArguments
    from hf_specdec.bench.model_size import ModelSizeArguments
    from hf_specdec.bench.speed import BenchmarkArguments

    shutil.copytree(CHECKPOINTS / "teacher", tmp_path / "teacher")
    for make in (lambda out: EngineBenchmarkArguments(checkpoints_dir=str(CHECKPOINTS), output_dir=out),
                 lambda out: BenchmarkArguments(checkpoints_dir=str(CHECKPOINTS), output_dir=out),
                 lambda out: ModelSizeArguments(output_dir=out)):
        for out in (tmp_path / "teacher", tmp_path / "teacher" / "results"):
            with pytest.raises(ValueError, match="`output_dir` .* is inside the saved model folder"):
                make(str(out))
        make(str(tmp_path / "results"))


# -- options are what the user gave ------------------------------------------------------------------------------

def test_quick_cuts_only_what_was_left_at_its_default():
    from hf_specdec.bench.speed import BenchmarkArguments

    quick = BenchmarkArguments(quick=True)
    assert quick.gammas == [4, 8] and quick.batch_sizes == [1, 16] and quick.repeats == 3 and len(quick.drafts) == 2
    given = BenchmarkArguments(quick=True, gammas=[2, 3], repeats=10, batch_sizes=[4, 8],
                               drafts=["draft-1L", "draft-2L", "feature-1L"])
    assert given.gammas == [2, 3] and given.repeats == 10 and given.batch_sizes == [4, 8] and len(given.drafts) == 3


def test_paired_benchmark_refuses_a_value_twice_and_names_its_own_options(tmp_path):
    from hf_specdec.bench.paired import paired_benchmark

    for option in ({"gammas": (6, 6)}, {"num_drafts": (2, 2)}):
        with pytest.raises(ValueError, match=f"`{next(iter(option))}` lists .* more than once"):
            paired_benchmark("cpu", 1, {"d": str(CHECKPOINTS / "draft-1L")}, teacher_path=str(CHECKPOINTS / "teacher"),
                             **option)
    result = run_python([str(ROOT / "scripts" / "paired_benchmark.py"), "cpu", "1", f"d={CHECKPOINTS / 'draft-1L'}"],
                        cwd=tmp_path, timeout=120)  # from another folder: the default teacher is not there
    assert result.returncode == 2 and "--teacher:" in result.stderr and "teacher_path" not in result.stderr
    assert f"working directory {str(tmp_path)!r}" in result.stderr


def test_a_relative_path_that_is_not_there_says_where_it_was_looked_for(tmp_path, monkeypatch):
    from hf_specdec import VQGPTForCausalLM
    from hf_specdec.hub import check_checkpoints_dir, load_pretrained

    monkeypatch.chdir(tmp_path)  # the shipped sets are named relative to the repository root
    with pytest.raises(ValueError, match=r"`teacher`: There is no folder 'checkpoints/digits/teacher' \(a relative "
                                         r"path, looked for in the working directory"):
        load_pretrained(VQGPTForCausalLM, "checkpoints/digits/teacher", "teacher")
    with pytest.raises(ValueError, match=r"`checkpoints_dir` 'checkpoints/digits' is not a folder \(a relative path"):
        check_checkpoints_dir("checkpoints/digits")
    with pytest.raises(ValueError, match=r"`checkpoints_dir` '/nowhere/at/all' is not a folder; it holds"):
        check_checkpoints_dir("/nowhere/at/all")  # an absolute path needs no hint


# -- models ------------------------------------------------------------------------------------------------------

def test_generate_with_a_generation_config_sets_its_defaults_on_a_copy(monkeypatch):
    """The grid length and `top_k=0` went into the keyword arguments next to the caller's config, which transformers
    deprecates (a warning on every call); the caller's config is left as it was."""
    from transformers import GenerationConfig, GenerationMixin

    teacher = tiny_model(0)
    seen = {}
    original = GenerationMixin.generate

    def spy(self, inputs=None, generation_config=None, **kwargs):
        seen.update(kwargs=dict(kwargs), config=generation_config)
        return original(self, inputs, generation_config=generation_config, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    config = GenerationConfig(do_sample=True)
    out = teacher.generate(teacher.class_prompt([0]), generation_config=config)
    assert out.shape == (1, teacher.config.max_position_embeddings)
    assert "top_k" not in seen["kwargs"] and "max_new_tokens" not in seen["kwargs"]
    assert seen["config"].top_k == 0 and seen["config"].max_new_tokens == teacher.config.num_image_tokens
    assert config.top_k is None and config.max_new_tokens is None  # the caller's config is untouched
    teacher.generate(teacher.class_prompt([0]), do_sample=True)  # no config: the defaults go in as arguments
    assert seen["kwargs"]["top_k"] == 0 and seen["config"] is None


def test_a_draft_in_training_mode_is_named_in_a_warning():
    """Dropout in the draft lowered acceptance (0.81 against 0.86 on the digits) without a word; lossless still."""
    teacher, draft = tiny_model(0, num_hidden_layers=3, dropout=0.1).eval(), tiny_model(1, dropout=0.1).train()
    prompt = teacher.class_prompt([0, 1])
    with pytest.warns(UserWarning, match=r"`draft` is in training mode with dropout 0.1: the output is still the "
                                         r"teacher's, but fewer drafts are accepted; call `draft.eval\(\)` first"):
        speculative_sample(teacher, draft, prompt, gamma=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        speculative_sample(teacher, draft.eval(), prompt, gamma=3)


def test_a_feature_draft_takes_its_teachers_dtype(tmp_path):
    teacher = tiny_model(0, num_hidden_layers=3)
    make_feature_draft(teacher, 1).save_pretrained(tmp_path / "feature")
    bf16 = teacher.to(torch.bfloat16)
    draft = VQGPTFeatureDraft.from_pretrained(tmp_path / "feature", teacher=bf16)
    assert draft.dtype == torch.bfloat16
    speculative_sample(bf16, draft, bf16.class_prompt([0]), gamma=2)  # was refused: float32 draft, bf16 teacher
    kept = VQGPTFeatureDraft.from_pretrained(tmp_path / "feature", teacher=bf16, dtype=torch.float32)
    assert kept.dtype == torch.float32  # asked for: kept
