"""Bad and unusual input from the fifth reliability hunt: legal inputs that crashed or misled (int32 prompts on the
streamed path, seeded adaptive calls, statistics over idle rows) and bad ones refused with a `ValueError` naming the
argument, before the work."""

import pytest
import torch

from hf_specdec import plain_sample, speculative_sample
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def pair():
    return tiny_model(0, num_hidden_layers=3), tiny_model(1, num_hidden_layers=1)


# -- the sampler ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting", [{}, {"num_drafts": 2}, {"verification": "block"}, {"cfg_scale": 2.0}])
def test_int32_prompts_stream(pair, setting):
    """int32 prompts are accepted; streamed (batch_size < prompts) they failed once the first image was done
    (`Index put requires the source and destination dtypes match`), losing it."""
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2])
    expected = teacher.generate(prompt, do_sample=False, **{k: v for k, v in setting.items() if k == "cfg_scale"})
    out = speculative_sample(teacher, draft, prompt.int(), gamma=3, do_sample=False, batch_size=2, **setting)
    assert out.sequences.dtype == torch.long and torch.equal(out.sequences, expected)
    if not setting:
        assert torch.equal(plain_sample(teacher, prompt.int(), do_sample=False, batch_size=2), expected)


def test_seeded_adaptive_calls_reproduce_whatever_ran_before(pair):
    """The running acceptance was kept across calls in the cached decoder: the first seeded call chose other gammas
    (and drew other images) than the same call made again."""
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1])
    outs = [speculative_sample(teacher, draft, prompt, gamma=6, adaptive_gamma=True, cost_ratio=0.1,
                               generator=torch.Generator().manual_seed(7)) for _ in range(3)]
    for out in outs[1:]:
        assert out.gamma_per_round == outs[0].gamma_per_round and torch.equal(out.sequences, outs[0].sequences)


def test_tokens_per_teacher_call_ignores_rows_without_a_prompt(pair):
    """batch_size 4 for 1 prompt: the 3 idle rows counted in the denominator (4x too low)."""
    teacher, draft = pair
    prompt = teacher.class_prompt([2])
    one = speculative_sample(teacher, draft, prompt, gamma=4, do_sample=False)
    wide = speculative_sample(teacher, draft, prompt, gamma=4, do_sample=False, batch_size=4)
    assert torch.equal(one.sequences, wide.sequences) and one.num_rounds == wide.num_rounds
    assert wide.tokens_per_teacher_call == pytest.approx(one.tokens_per_teacher_call)
    assert wide.accepted_per_round.shape == one.accepted_per_round.shape == (one.num_rounds, 1)
    assert wide.alpha == pytest.approx(one.alpha)


def test_tree_deeper_than_gamma_is_refused(pair):
    """A tree branches at draft positions: tree_depth 5 at gamma 2 drew 8x the chains (copies) for the same result."""
    teacher, draft = pair
    prompt = teacher.class_prompt([0])
    with pytest.raises(ValueError, match=r"`tree_depth` 5 must be <= `gamma` 2"):
        speculative_sample(teacher, draft, prompt, gamma=2, num_drafts=2, tree_depth=5)
    speculative_sample(teacher, draft, prompt, gamma=2, num_drafts=2, tree_depth=2, do_sample=False)


# -- configs -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, words", [
    ("dropout", None, "`dropout` must be a number in [0, 1)"),
    ("class_dropout_prob", "0.1", "`class_dropout_prob` must be a number"),
    ("layer_norm_eps", "1e-5", "`layer_norm_eps` must be a finite number > 0"),
    ("initializer_range", None, "`initializer_range` must be a finite number >= 0"),
    ("intermediate_size", 2.5, "`intermediate_size` must be a positive integer"),
    ("intermediate_size", "64", "`intermediate_size` must be a positive integer"),
    ("num_hidden_layers", True, "`num_hidden_layers` must be a positive integer, got True"),  # was a 1-layer model
    ("codebook_size", True, "`codebook_size` must be a positive integer"),
    ("num_classes", True, "`num_classes` must be an integer >= 0"),
    ("tie_word_embeddings", True, "`tie_word_embeddings` must be False"),  # accepted, and had no effect
])
def test_config_fields_of_the_wrong_type_are_named(field, value, words):
    from hf_specdec.models import VQGPTConfig

    with pytest.raises(ValueError) as error:
        VQGPTConfig(**{field: value})
    assert words in str(error.value)


@pytest.mark.parametrize("fields, words", [
    ({"feature_layers": 3}, "`feature_layers` must be a non-empty list"),  # TypeError: 'int' object is not iterable
    ({"feature_layers": [True, 6, 12]}, "`feature_layers` must be a non-empty list"),  # read as layer 1: alpha fell
    ({"feature_layers": "2"}, "`feature_layers` must be a non-empty list"),
    ({"teacher_num_hidden_layers": True}, "`teacher_num_hidden_layers` must be a positive integer"),
])
def test_feature_draft_config_fields_are_named(fields, words):
    from hf_specdec.models.modeling_feature_draft import VQGPTFeatureDraftConfig

    with pytest.raises(ValueError, match=words):
        VQGPTFeatureDraftConfig(**{"teacher_num_hidden_layers": 12, **fields})


def test_a_config_json_with_a_null_field_exits_2_naming_it(tmp_path):
    """Through a hand-edited config.json: a TypeError traceback and exit status 1."""
    import json
    import shutil

    from tests.utils import CHECKPOINTS, run_script

    shutil.copytree(CHECKPOINTS / "teacher", tmp_path / "teacher")
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    (tmp_path / "teacher" / "config.json").write_text(json.dumps({**config, "dropout": None}))
    result = run_script("generate.py", "--teacher", str(tmp_path / "teacher"), "--method", "plain", "--classes", "0",
                        "--samples_per_class", "1", "--output", str(tmp_path / "grid.png"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "`dropout` must be a number" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "grid.png").exists()


# -- scripts and metrics -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "distill_metrics.json", "sizes.json"])
def test_compact_output_json_inside_a_compacted_folder_is_refused(tmp_path, name):
    """`--output_json <folder>/config.json` replaced the model's config (exit 0; the model no longer loaded)."""
    import shutil

    from tests.utils import CHECKPOINTS, run_script

    shutil.copytree(CHECKPOINTS / "draft-2L", tmp_path / "draft-2L")
    before = {f.name: f.read_bytes() for f in (tmp_path / "draft-2L").iterdir() if f.is_file()}
    result = run_script("compact_checkpoints.py", "--folders", str(tmp_path / "draft-2L"), "--output_json",
                        str(tmp_path / "draft-2L" / name))
    assert result.returncode == 2 and "`output_json`" in result.stderr and "inside the `folders` folder" in result.stderr
    assert before == {f.name: f.read_bytes() for f in (tmp_path / "draft-2L").iterdir() if f.is_file()}


def test_an_output_file_is_never_a_file_of_a_saved_model(tmp_path):
    import shutil

    from hf_specdec.hub import check_output_file
    from tests.utils import CHECKPOINTS

    shutil.copytree(CHECKPOINTS / "draft-1L", tmp_path / "draft-1L")
    for name in ("config.json", "model.safetensors", "distill_metrics.json", "modeling_vqgpt.py"):
        with pytest.raises(ValueError, match="is a file of the saved model"):
            check_output_file(str(tmp_path / "draft-1L" / name), "output")
    # a new file beside it would be pushed with the model (hunt 7: a sample grid replaced a tokenizer's card picture)
    for name in ("notes.json", "reconstructions.png", "sub/samples.png"):
        with pytest.raises(ValueError, match="is inside the saved model folder"):
            check_output_file(str(tmp_path / "draft-1L" / name), "output")
    check_output_file(str(tmp_path / "results.json"), "output")


def test_generate_batch_size_is_refused_where_no_method_reads_it(tmp_path):
    from tests.utils import run_script

    for method in ("plain", "assisted"):
        result = run_script("generate.py", "--method", method, "--batch_size", "2", "--classes", "0",
                            "--samples_per_class", "1", "--output", str(tmp_path / "grid.png"))
        assert result.returncode == 2 and "`batch_size` is read only with `method` speculative" in result.stderr


@pytest.mark.parametrize("rounds", [1, 0, -3, 2.5, True])
def test_bootstrap_rounds_below_2_are_refused(rounds):
    """1 wrote NaN intervals (evaluate_quality.py exited 0); the metric modules turned 0 and -3 into 1, 2.5 was a
    TypeError."""
    from hf_specdec.metrics.quality import fid_with_ci

    with pytest.raises(ValueError, match="`rounds` must be an integer >= 2"):
        fid_with_ci(torch.randn(6, 4), torch.randn(6, 4), rounds=rounds)


def test_quality_arguments_refuse_one_bootstrap_round(tmp_path):
    from hf_specdec.bench.quality import QualityArguments
    from tests.utils import CHECKPOINTS

    with pytest.raises(ValueError, match="`bootstrap_rounds` must be an integer >= 2"):
        QualityArguments(checkpoints_dir=str(CHECKPOINTS), bootstrap_rounds=1, output_dir=str(tmp_path / "q"))


@pytest.mark.parametrize("splits, match", [(10, "`splits` 10 needs at least 20 images"), (0, "`splits` must be"),
                                           (-1, "`splits` must be"), (1.5, "`splits` must be")])
def test_inception_score_splits_are_checked(splits, match):
    """More splits than images scored any images 1.0; 0 or -1 was a torchmetrics RuntimeError."""
    from hf_specdec.metrics.quality import inception_score_with_ci

    with pytest.raises(ValueError, match=match):
        inception_score_with_ci(torch.randn(6, 10), splits=splits, rounds=2)
    assert inception_score_with_ci(torch.randn(6, 10), splits=3, rounds=2)[0] > 1.0


def test_engine_benchmark_duplicates_and_extra_gammas_are_named(tmp_path):
    from hf_specdec.bench.engine_speed import EngineBenchmarkArguments, check_gammas_fit
    from hf_specdec.models import VQGPTConfig

    with pytest.raises(ValueError, match=r"`batch_sizes` lists \[1\] more than once"):
        EngineBenchmarkArguments(batch_sizes=[1, 1], output_dir=str(tmp_path / "e"))
    with pytest.raises(ValueError, match=r"`extra_gammas` lists \[4\] more than once"):
        EngineBenchmarkArguments(batch_sizes=[1], extra_gammas=[4, 4], output_dir=str(tmp_path / "e"))
    args = EngineBenchmarkArguments(batch_sizes=[1], gamma=4, extra_gammas=[100], output_dir=str(tmp_path / "e"))
    with pytest.raises(ValueError, match=r"`extra_gammas` must be at most the teacher's 64-token grid, got \[100\]"):
        check_gammas_fit(args, VQGPTConfig(grid_h=8, grid_w=8))


@pytest.mark.parametrize("kwargs, match", [
    (dict(padding=-4), "`padding` must be an integer >= 0"), (dict(padding=2.5), "`padding`"),
    (dict(cell_size=0), "`cell_size` must be an integer >= 1"), (dict(cell_size="64"), "`cell_size`"),
    (dict(row_labels=[1, 2]), "`row_labels` must be a list of strings"), (dict(title=5), "`title` must be a string"),
])
def test_labelled_grid_arguments_are_named(kwargs, match):
    from hf_specdec.images import labelled_grid

    with pytest.raises(ValueError, match=match):
        labelled_grid(torch.zeros(4, 3, 8, 8), nrow=2, **kwargs)
    assert labelled_grid(torch.zeros(4, 3, 8, 8), nrow=2, row_labels=["a", "b"], title="t").size[0] > 0


def test_summarize_checkpoints_reads_a_parameter_count_stored_as_a_string(tmp_path):
    import json
    import shutil

    from tests.utils import CHECKPOINTS, run_script

    shutil.copytree(CHECKPOINTS / "draft-1L", tmp_path / "draft-1L")
    metrics = json.loads((tmp_path / "draft-1L" / "distill_metrics.json").read_text())
    (tmp_path / "draft-1L" / "distill_metrics.json").write_text(json.dumps({**metrics, "parameters": "12"}))
    result = run_script("summarize_checkpoints.py", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| draft-1L |  |" in result.stdout


def test_streamed_prompt_passes_are_counted(pair):
    """Prompts of 5 tokens streamed through 2 rows: each refill's prefill pass was left out of teacher_forwards and
    draft_forwards ("prefill included"). Counted here with forward hooks."""
    teacher, draft = pair
    prompt = torch.cat([teacher.class_prompt([0, 1, 2, 0, 1, 2]), torch.randint(0, 16, (6, 4))], dim=1)
    calls = {"teacher": 0, "draft": 0}
    hooks = [model.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
             for name, model in (("teacher", teacher), ("draft", draft))]
    try:
        out = speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False, batch_size=2, mode="eager")
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(out.sequences, teacher.generate(prompt, do_sample=False))
    assert (out.teacher_forwards, out.draft_forwards) == (calls["teacher"], calls["draft"])
