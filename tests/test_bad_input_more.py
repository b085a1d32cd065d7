"""More bad input, from the reliability hunt: each refused with a `ValueError` naming the argument, before the work.

evaluate_quality's `drafts` and `relaxed_neighbours`, damaged-but-parseable training checkpoints, the pipeline
helpers, and the main job's / benchmark's options (`self_speculative_layers`, `mode`, `output`)."""

import json
import re
import shutil

import pytest
import torch

from hf_specdec.bench import quality
from hf_specdec.bench.quality import QualityArguments, evaluate_quality
from hf_specdec.bench.quality import load_draft as quality_load_draft
from hf_specdec.data import DataArguments
from hf_specdec.metrics.classifier import DigitsClassifier
from hf_specdec.pipeline import class_prompts, decode_sequences, sample_images, sequence_codes
from hf_specdec.training import list_checkpoints, resolve_checkpoint
from hf_specdec.training.trainer import TrainingArguments, train
from tests.utils import run_script, tiny_model, tiny_vq


class Sampled(Exception):
    """Raised instead of sampling: reaching it means every check passed."""


def _no_sampling(*args, **kwargs):
    raise Sampled


# -- evaluate_quality: drafts and relaxed_neighbours (items 4 and 13) -----------------------------------------------

@pytest.fixture(scope="module")
def quality_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("quality")
    tiny_model(0, grid_h=8, grid_w=8, num_classes=10).save_pretrained(path / "teacher")
    tiny_model(1, num_hidden_layers=1, grid_h=8, grid_w=8, num_classes=10).save_pretrained(path / "draft-1L")
    tiny_vq().save_pretrained(path / "vq-tokenizer")
    torch.manual_seed(0)
    DigitsClassifier(channels=(8, 8, 8)).save_pretrained(path / "classifier")
    (path / "classifier" / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    (path / "a-file").write_text("not a model")
    return path


def _quality_args(path, **overrides):
    fields = dict(checkpoints_dir=str(path), num_images=10, batch_size=10, bootstrap_rounds=2,
                  output_dir=str(path / "out"), relaxed_neighbours=0, speculative_draft="none", drafts=[])
    return QualityArguments(**{**fields, **overrides})


@pytest.mark.parametrize("drafts, match", [
    (["nothing"], r"`drafts` 'nothing' is neither a folder in .*\(classifier, draft-1L, teacher, vq-tokenizer\)"),
    (["draft-1L", "draft1L"], r"`drafts` 'draft1L' is neither a folder"),  # a typo next to a good one
    (["a-file"], r"`drafts` 'a-file' is a file"),
])
def test_evaluate_quality_refuses_unusable_drafts_before_sampling(quality_dir, monkeypatch, drafts, match):
    monkeypatch.setattr(quality, "_sample", _no_sampling)
    with pytest.raises(ValueError, match=match):
        evaluate_quality(_quality_args(quality_dir, drafts=drafts), DataArguments(resolution=32))


def test_evaluate_quality_takes_draft_paths_and_skips_untrained_presets_with_a_note(quality_dir, monkeypatch):
    monkeypatch.setattr(quality, "_sample", _no_sampling)
    data = DataArguments(resolution=32)
    loaded = []
    monkeypatch.setattr(quality, "load_draft", lambda name, *args: loaded.append(name) or quality_load_draft(name, *args))
    monkeypatch.chdir(quality_dir.parent)  # a path relative to the working directory, not to checkpoints_dir
    for draft in (f"{quality_dir.name}/draft-1L", str(quality_dir / "draft-1L")):
        with pytest.raises(Sampled):  # every check passed
            evaluate_quality(_quality_args(quality_dir, drafts=[draft]), data)
        assert loaded.pop() == draft  # the draft was kept, not dropped
    with pytest.warns(UserWarning, match="skipped draft 'student-4L'"), pytest.raises(Sampled):
        evaluate_quality(_quality_args(quality_dir, drafts=["student-4L"]), data)


def test_evaluate_quality_grid_of_a_draft_given_as_a_path_lands_in_output_dir(quality_dir, tmp_path):
    outside = tmp_path / "elsewhere" / "my-draft"
    shutil.copytree(quality_dir / "draft-1L", outside)
    args = _quality_args(quality_dir, drafts=[str(outside), "draft-1L", "student-4L"], output_dir=str(tmp_path / "out"))
    with pytest.warns(UserWarning, match="student-4L"):
        summary = evaluate_quality(args, DataArguments(resolution=32))
    assert [r["method"] for r in summary["results"]] == ["real (train split)", "teacher", f"{outside} alone",
                                                         "draft-1L alone"]
    assert sorted(p.name for p in (tmp_path / "out" / "samples").iterdir()) == [
        "draft-1L-alone.png", "my-draft-alone.png", "real.png", "teacher.png"]
    assert sorted(p.name for p in outside.parent.iterdir()) == ["my-draft"]  # nothing written beside the draft
    assert any("student-4L" in note for note in summary["notes"])
    assert "student-4L" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize("k", [17, 10000])
def test_evaluate_quality_checks_relaxed_neighbours_against_the_codebook_before_sampling(quality_dir, monkeypatch, k):
    monkeypatch.setattr(quality, "_sample", _no_sampling)
    args = _quality_args(quality_dir, relaxed_neighbours=k, speculative_draft="draft-1L")
    with pytest.raises(ValueError, match=r"`relaxed_neighbours` must be an integer in \[0, 16\].*16 codes"):
        evaluate_quality(args, DataArguments(resolution=32))
    with pytest.raises(Sampled):
        evaluate_quality(_quality_args(quality_dir, relaxed_neighbours=16, speculative_draft="draft-1L"),
                         DataArguments(resolution=32))


def test_evaluate_quality_checks_the_speculative_draft_before_sampling(quality_dir, monkeypatch):
    monkeypatch.setattr(quality, "_sample", _no_sampling)
    with pytest.raises(ValueError, match="`speculative_draft` 'nothing' is neither a folder in .*draft-1L"):
        evaluate_quality(_quality_args(quality_dir, speculative_draft="nothing"), DataArguments(resolution=32))
    with pytest.raises(ValueError, match="`teacher` 'teachr' is neither a folder in"):  # went to the Hub, retrying
        evaluate_quality(_quality_args(quality_dir, teacher="teachr"), DataArguments(resolution=32))


# -- training checkpoints whose JSON parses but is not what was saved (item 8) -----------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("train")
    batch = torch.cat([16 + torch.arange(4)[:, None] % 3, torch.randint(0, 16, (4, 16))], dim=1)
    args = TrainingArguments(output_dir=str(path), max_steps=2, per_device_batch_size=4, eval_every=0, save_every=2,
                             log_every=1)
    loss = lambda m, ids, s: (m(ids, labels=ids, use_cache=False).loss, {})  # noqa: E731
    train(tiny_model(0), list(batch), loss, args, collate_fn=torch.stack)
    (checkpoint,) = list_checkpoints(str(path / "checkpoints"))
    return dict(checkpoint=checkpoint, batch=batch, loss=loss, args=args)


def _edit(path, name, edit):
    file = path / name
    data = json.loads(file.read_text())
    file.write_text(json.dumps(edit(data)))


CORRUPTIONS = [
    ("trainer_state.json", lambda s: {}, "has no global_step, scheduler, rng"),
    ("trainer_state.json", lambda s: [], "holds an array"),
    ("trainer_state.json", lambda s: {**s, "global_step": "two"}, "global_step must be an integer"),
    ("trainer_state.json", lambda s: {**s, "global_step": -1}, "global_step must be an integer >= 0"),
    ("trainer_state.json", lambda s: {**s, "scheduler": None}, "scheduler must be an object .*got null"),
    ("trainer_state.json", lambda s: {**s, "rng": {"python": 1}}, "rng must hold"),
    ("optimizer.json", lambda m: None, "holds null, not an object"),
    ("optimizer.json", lambda m: [], "holds an array"),
    ("optimizer.json", lambda m: {**m, "param_groups": None}, "param_groups"),
    ("optimizer.json", lambda m: {**m, "scalars": []}, "scalars"),
    ("optimizer.json", lambda m: {**m, "version": "2"}, "version"),
]


@pytest.mark.parametrize("name, edit, why", CORRUPTIONS, ids=[f"{n}-{w[:20]}" for n, _, w in CORRUPTIONS])
def test_checkpoint_json_of_the_wrong_shape_is_not_usable(trained, tmp_path, name, edit, why):
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    shutil.copytree(trained["checkpoint"], checkpoint)
    _edit(checkpoint, name, edit)
    pattern = rf"`resume_from_checkpoint` .* is not a usable checkpoint: .*{re.escape(name)} \(.*{why}"
    with pytest.raises(ValueError, match=pattern):
        resolve_checkpoint(str(checkpoint), str(checkpoint.parent))
    with pytest.raises(ValueError, match=r"every checkpoint .* is damaged"):
        resolve_checkpoint("latest", str(checkpoint.parent))


def test_resuming_a_checkpoint_with_a_partial_scheduler_state_is_refused(trained, tmp_path):
    """Seen by train itself: load_checkpoint checks too, and a scheduler state without its position is refused
    (LRScheduler.load_state_dict would take it and silently restart the schedule)."""
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    shutil.copytree(trained["checkpoint"], checkpoint)
    _edit(checkpoint, "trainer_state.json", lambda s: {**s, "scheduler": {}})
    args = TrainingArguments(**{**vars(trained["args"]), "output_dir": str(tmp_path), "max_steps": 4,
                                "resume_from_checkpoint": str(checkpoint)})
    with pytest.raises(ValueError, match=r"not a usable checkpoint: .*trainer_state\.json \(the scheduler state has no"):
        train(tiny_model(0), list(trained["batch"]), trained["loss"], args, collate_fn=torch.stack)
    _edit(checkpoint, "trainer_state.json", lambda s: {**s, "global_step": "two"})
    with pytest.raises(ValueError, match=r"not a usable checkpoint: .*global_step"):
        train(tiny_model(0), list(trained["batch"]), trained["loss"], args, collate_fn=torch.stack)


# -- pipeline helpers (item 16) ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair():
    return tiny_model(0, grid_h=8, grid_w=8), tiny_vq()


def test_sequence_codes_and_decode_sequences_need_whole_sequences(pair):
    model, tokenizer = pair
    whole = torch.cat([class_prompts(model, 2), torch.randint(0, 16, (2, 64))], dim=1)
    assert sequence_codes(whole, model.config).shape == (2, 8, 8)
    short = model.generate(class_prompts(model, 2), max_new_tokens=5)
    for bad, match in ((short, r"\(2, 6\)"), (whole[0], r"\(65,\)"), (whole.float(), "integer"),
                       (whole.tolist(), "list"), (torch.cat([whole[:, :1], whole[:, :1] + 16, whole[:, 2:]], 1), "outside")):
        with pytest.raises(ValueError, match=f"`sequences` .*{match}"):
            sequence_codes(bad, model.config)
        with pytest.raises(ValueError, match="`sequences`"):
            decode_sequences(tokenizer, bad, model.config)


def test_sample_images_honours_or_refuses_its_arguments(pair):
    model, tokenizer = pair
    images, codes = sample_images(model, tokenizer, [0, 1], num_images=2, do_sample=False)
    assert images.shape[0] == codes.shape[0] == 2
    images, _ = sample_images(model, tokenizer, num_images=3, do_sample=False)
    assert images.shape[0] == 3
    # num_return_sequences: k images per label, next to each other (the docstring said one per label)
    torch.manual_seed(0)
    images, codes = sample_images(model, tokenizer, [0, 1], do_sample=True, num_return_sequences=3)
    assert images.shape[0] == codes.shape[0] == 6
    greedy = sample_images(model, tokenizer, [1, 0], do_sample=True, top_k=1, num_return_sequences=2)[1]
    assert torch.equal(greedy[0], greedy[1]) and torch.equal(greedy[2], greedy[3])
    assert torch.equal(greedy[0], sample_images(model, tokenizer, [1], do_sample=False)[1][0])
    for kwargs, match in ((dict(labels=[0], max_new_tokens=4), "`max_new_tokens` is not an argument"),
                          (dict(labels=[0], max_length=10), "`max_length`"),
                          (dict(labels=[0], num_images=2), r"`num_images` 2 disagrees with the 1 `labels`"),
                          (dict(), "needs `labels` .* or `num_images`"),
                          (dict(num_images=True), "`num_images` must be an integer"),
                          (dict(num_images=1.5), "`num_images` must be an integer"),
                          (dict(num_images=0), "`num_images` must be an integer >= 1"),
                          (dict(labels=[]), "`labels` is empty"),  # was "must be integer class ids, got torch.float32"
                          (dict(labels=[1], do_sample=True, return_dict_in_generate=True),
                           "`return_dict_in_generate` is not an argument of `sample_images`")):
        with pytest.raises(ValueError, match=match):
            sample_images(model, tokenizer, **kwargs)
    # another codebook: its codes were looked up in the wrong table without a word
    # another tokenizer of the same codebook size and grid: the same codes decode to other pictures
    from hf_specdec.pipeline import weights_fingerprint

    sequences = model.generate(class_prompts(model, 1), do_sample=False)
    model.config.tokenizer_fingerprint = weights_fingerprint(tokenizer)
    try:
        assert decode_sequences(tokenizer, sequences, model.config).shape[0] == 1
        with pytest.raises(ValueError, match="`tokenizer` is not the tokenizer the model learned"):
            decode_sequences(tiny_vq(seed=1), sequences, model.config)
        with pytest.raises(ValueError, match="`tokenizer` is not the tokenizer the model learned"):
            sample_images(model, tiny_vq(seed=1), [0], do_sample=False)
        assert weights_fingerprint(tokenizer.to(torch.bfloat16)) is None  # rounded weights: not compared
        tokenizer.float()
    finally:
        model.config.tokenizer_fingerprint = None
    with pytest.raises(ValueError, match="`tokenizer` has 32 codes"):
        decode_sequences(tiny_vq(num_vq_embeddings=32), model.generate(class_prompts(model, 1), do_sample=False),
                         model.config)


def test_class_prompts_refuses_bad_batch_sizes():
    model, unconditional = tiny_model(0), tiny_model(0, num_classes=0)
    assert class_prompts(model, 4).tolist() == [[16], [17], [18], [16]]
    for bad in (-2, 0, True):
        with pytest.raises(ValueError, match="`labels`"):
            class_prompts(model, bad)
    with pytest.raises(ValueError, match="`first`"):
        class_prompts(model, 2, first=1.5)
    for bad in (0, [], True):
        with pytest.raises(ValueError, match="`labels`"):
            class_prompts(unconditional, bad)
    assert class_prompts(unconditional, 2).shape == (2, 1)


# -- the main job and the benchmark (item 17) ----------------------------------------------------------------------

def test_benchmark_names_self_speculative_layers(quality_dir, tmp_path):
    result = run_script("benchmark.py", "--checkpoints_dir", quality_dir, "--drafts", "draft-1L",
                        "--self_speculative_layers", "12", "--output_dir", tmp_path / "out")
    assert result.returncode != 0
    assert "`self_speculative_layers` must be in [1, 1], got 12" in result.stderr, result.stderr[-2000:]
    assert "num_layers" not in result.stderr


def test_cuda_graph_mode_needs_a_cuda_device_before_models_load(tmp_path):
    from hf_specdec.bench.sample_grid import SampleGridArguments

    with pytest.raises(ValueError, match="`mode` cuda-graph needs a CUDA `device`, got 'cpu'"):
        SampleGridArguments(mode="cuda-graph", device="cpu", output=str(tmp_path / "x.png"))
    result = run_script("generate.py", "--teacher", tmp_path / "missing", "--mode", "cuda-graph", "--device", "cpu",
                        "--output", tmp_path / "x.png")
    assert result.returncode != 0 and "`mode` cuda-graph" in result.stderr and "teacher" not in result.stderr


def test_output_that_cannot_be_written_is_refused_up_front_and_at_save_time(tmp_path, monkeypatch):
    import tempfile

    from PIL import Image

    from hf_specdec.bench import sample_grid
    from hf_specdec.bench.sample_grid import SampleGridArguments, run_sample_grid

    def refuse(*args, **kwargs):  # what root meets on a read-only or virtual file system (os.access says yes)
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(ValueError, match=r"`output` .*x\.png' cannot be written: nothing can be written in .*PermissionError"):
            SampleGridArguments(output=str(tmp_path / "x.png"))
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "x.png").chmod(0o444)
    if not sample_grid.os.access(tmp_path / "x.png", sample_grid.os.W_OK):  # not root: an unwritable file
        with pytest.raises(ValueError, match="`output`"):
            SampleGridArguments(output=str(tmp_path / "x.png"))

    # At save time (a full disk): one clear error naming `output`, saying the work was done.
    teacher, draft = tiny_model(0, grid_h=8, grid_w=8), tiny_model(1, grid_h=8, grid_w=8, num_hidden_layers=1)
    for name, model in (("teacher", teacher), ("draft", draft), ("vq", tiny_vq())):
        model.save_pretrained(tmp_path / name)
    args = SampleGridArguments(teacher=str(tmp_path / "teacher"), assistant=str(tmp_path / "draft"),
                               tokenizer=str(tmp_path / "vq"), classes=[0], samples_per_class=1, gamma=2,
                               output=str(tmp_path / "grid.png"))
    monkeypatch.setattr(Image.Image, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(ValueError, match=r"`output` .*grid\.png' could not be saved \(OSError: No space left on device\)"
                                         r"; the grid was drawn and timed"):
        run_sample_grid(args)


def test_images_to_tensor_takes_pil_images_only_and_says_how_to_convert_the_rest():
    import numpy as np
    from PIL import Image

    from hf_specdec.images import check_images, images_to_tensor

    array = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype("uint8")
    one = images_to_tensor(Image.fromarray(array), 32)  # a single image is a batch of one
    assert one.shape == (1, 3, 32, 32) and torch.equal(one, images_to_tensor([Image.fromarray(array)], 32))
    for bad, match in [(array, r"`images` must be a list of PIL images, got a ndarray"),
                       ([array], r"`images\[0\]` must be a PIL image, got a ndarray.*Image\.fromarray"),
                       ([Image.fromarray(array), "x.png"], r"`images\[1\]` must be a PIL image, got a str.*Image\.open"),
                       (torch.zeros(1, 3, 32, 32), r"tensors in \[-1, 1\] need no conversion")]:
        with pytest.raises(ValueError, match=match):
            images_to_tensor(bad, 32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_images(torch.full((1, 3, 8, 8), float("nan")))


def test_picture_helpers_refuse_what_they_would_draw_as_garbage():
    from hf_specdec.images import from_uint8, image_grid, labelled_grid, tensor_to_images

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert image_grid(x, nrow=2).size == (2 * 10 + 2, 2 * 10 + 2) and len(tensor_to_images(x[:, :1])) == 4
    pixels = ((x + 1) * 127.5).round()
    for call, match in ((lambda: image_grid(x, nrow=0), "`nrow` must be an integer >= 1"),  # ZeroDivisionError
                        (lambda: labelled_grid(x, nrow=0), "`nrow`"),
                        (lambda: image_grid(x[:0]), "`images` is empty"),
                        (lambda: image_grid(x[0]), r"shape \(3, 8, 8\)"),  # "not enough values to unpack"
                        (lambda: image_grid(pixels), r"values in \[.*from_uint8"),  # drew an all-white grid
                        (lambda: image_grid(pixels.to(torch.uint8)), "dtype torch.uint8"),  # drew garbage
                        (lambda: image_grid(torch.full_like(x, float("nan"))), "NaN"),
                        (lambda: labelled_grid(x, nrow=1, row_labels=["a"]), "`row_labels` must name each of the 4 rows")):
        with pytest.raises(ValueError, match=match):
            call()
    assert image_grid(from_uint8(pixels.to(torch.uint8)), nrow=4).size == (4 * 10 + 2, 12)
