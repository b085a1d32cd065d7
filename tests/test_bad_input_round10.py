"""Bad and unusual input from the eleventh and twelfth reliability hunts, and the classifier's run lock."""

import socket
import subprocess

import pytest
import torch

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


def _folder(root, classes, n=4, size=12, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_metadata_file_with_an_empty_label_is_named(tmp_path):
    """One empty cell: a TypeError deep in the split; three: None labels, and training died in the embedding."""
    from hf_specdec.data import load_imagefolder

    for empty in (1, 3):
        root = _folder(tmp_path / f"e{empty}", ["flat"], n=12)
        rows = [f"{i}.png,{'' if i < empty else 'cat' if i % 2 else 'dog'}" for i in range(12)]
        (root / "flat" / "metadata.csv").write_text("file_name,label\n" + "\n".join(rows) + "\n")
        with pytest.raises(ValueError, match=rf"gives {empty} image\(s\) no `label` \(an empty cell\): .*0.png"):
            load_imagefolder(str(root / "flat"), val_fraction=0.25, test_fraction=0.25)


def test_images_left_out_for_a_broken_link_or_a_metadata_file_are_named_for_what_they_are(tmp_path):
    """Both were told to rename split words and copy linked folders in, neither of which applied."""
    import os

    from hf_specdec.data import load_imagefolder

    root = _folder(tmp_path / "links", ["a", "b"])
    os.symlink(tmp_path / "nowhere.png", root / "b" / "dangling.png")
    with pytest.raises(ValueError, match=r"1 image link\(s\) point to nothing: b/dangling.png"):
        load_imagefolder(str(root), val_fraction=0.25, test_fraction=0.25)
    root = _folder(tmp_path / "meta", ["flat"], n=8)
    rows = [f"{i}.png,{'cat' if i % 2 else 'dog'}" for i in range(7)]  # 7.png is not listed
    (root / "flat" / "metadata.csv").write_text("file_name,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"1 image file\(s\) are not named in metadata.csv.*7.png. Add a row"):
        load_imagefolder(str(root / "flat"), val_fraction=0.25, test_fraction=0.25)


def test_an_empty_class_folder_is_named_not_dropped(tmp_path):
    """It got no class id, and every class sorted after it another id than the folder listing gives."""
    from hf_specdec.data import load_imagefolder

    root = _folder(tmp_path / "data", ["bird", "cat"])
    (root / "ant").mkdir()
    (root / "ant" / ".DS_Store").write_text("")
    with pytest.raises(ValueError, match=r"class folder\(s\) without an image: ant\."):
        load_imagefolder(str(root), val_fraction=0.25, test_fraction=0.25)
    split = _folder(tmp_path / "splits", ["train/bird", "train/cat", "test/bird", "test/cat"])
    (split / "test" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"without an image: test/dog"):
        load_imagefolder(str(split), val_fraction=0.25, test_fraction=0.25)
    (split / "test" / "dog").rmdir()
    assert load_imagefolder(str(split), val_fraction=0.25, test_fraction=0.25)["train"].features["label"].names == \
        ["bird", "cat"]


def test_images_replaced_with_their_times_kept_get_a_new_fingerprint(tmp_path):
    """datasets fingerprints a folder by paths and modification times: `cp -p` of new images over old ones served
    the old codes from the token cache."""
    import os

    import numpy as np
    from PIL import Image

    from hf_specdec.data import load_imagefolder

    root = _folder(tmp_path / "data", ["a", "b"])
    before = load_imagefolder(str(root), val_fraction=0.25, test_fraction=0.25)
    assert load_imagefolder(str(root), val_fraction=0.25, test_fraction=0.25)["train"]._fingerprint == \
        before["train"]._fingerprint  # the same images: the cache is reused
    path = root / "a" / "0.png"
    times = os.stat(path)
    Image.fromarray(np.full((12, 12, 3), 255, dtype=np.uint8)).save(path)
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    after = load_imagefolder(str(root), val_fraction=0.25, test_fraction=0.25)
    assert all(after[s]._fingerprint != before[s]._fingerprint for s in before)


def test_images_in_zero_one_are_refused_by_the_metrics_and_warned_about_by_the_tokenizer():
    """torchvision's [0, 1] passed the [-1, 1] check: an FID 8x too good, codes of other colours."""
    import torch

    from hf_specdec.metrics.classifier import metric_images
    from hf_specdec.models import VQTokenizer
    from tests.utils import CHECKPOINTS

    unit = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"`predictions` must be images in \[-1, 1\], got values in \[0, 1\] only: .*"
                                         r"images \* 2 - 1"):
        metric_images(unit.numpy(), "predictions", CHECKPOINTS / "classifier")
    assert metric_images((unit * 2 - 1).numpy(), "predictions", CHECKPOINTS / "classifier").shape == unit.shape
    tokenizer = VQTokenizer.from_pretrained(CHECKPOINTS / "vq-tokenizer")
    with pytest.warns(UserWarning, match=r"values in \[0, 1\] only; the tokenizer takes \[-1, 1\]"):
        tokenizer.encode_to_indices(unit)


def test_grid_labels_in_other_scripts_and_on_two_lines_are_drawn():
    """Pillow's built-in font drew `ñandú` as boxes, and a label with a newline raised in Pillow."""
    import torch

    from hf_specdec.images import _drawable, _label_font, labelled_grid

    grid = labelled_grid(torch.zeros(2, 3, 8, 8), 1, ["ñandú", "two\nlines"], title="a\ttitle")
    assert grid.size[1] > 2 * 64
    assert _drawable("ñandú 猫\nx", full=False) == "nandu ? x" and _drawable("two\nlines", full=True) == "two lines"
    pytest.importorskip("matplotlib")  # (the bench extra; DejaVu Sans comes with it)
    font, full = _label_font(12)
    assert full and font.getname()[0] == "DejaVu Sans"


def test_generate_refuses_top_p_past_one_and_no_images_per_prompt():
    """transformers builds its top-p warper only below 1 (top_p=2.0 sampled untruncated), and 0 or -1 images per
    prompt gave one; the project's samplers refused the same values."""
    from tests.conftest import tiny_model

    model = tiny_model(0)
    prompt = model.class_prompt([1])
    for kwargs, message in (({"top_p": 2.0}, r"`top_p` must be a number in \(0, 1\]"),
                            ({"typical_p": float("nan")}, r"`typical_p` must be a number in \(0, 1\]"),
                            ({"num_return_sequences": 0}, r"`num_return_sequences` must be an integer >= 1"),
                            ({"num_return_sequences": -1}, r"`num_return_sequences` must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            model.generate(prompt, do_sample=True, **kwargs)
    assert model.generate(prompt, do_sample=True, top_p=1.0, num_return_sequences=2).shape[0] == 2


def test_the_main_job_says_when_its_teacher_is_a_draft(tmp_path):
    """`--teacher checkpoints/digits/draft-1L` drew and timed the draft as the teacher, titled "speculative"."""
    from tests.utils import CHECKPOINTS

    with pytest.warns(UserWarning) as caught:
        result = run_script("generate.py", "--teacher", CHECKPOINTS / "draft-1L", "--assistant",
                            CHECKPOINTS / "draft-2L", "--classes", "0", "--samples_per_class", "1", "--output",
                            tmp_path / "grid.png")
    assert result.returncode == 0, result.stderr[-2000:]
    said = " ".join(str(w.message) for w in caught)
    assert "is a distilled draft (it holds distill_metrics.json)" in said
    assert "`assistant` has 2 layers, the teacher 1" in said


def test_legacy_outputs_pool_alone_and_give_no_per_image_figure_they_do_not_record():
    """The legacy loops record no rows still drawing: their per-image figure silently equalled the per-row one
    (1.067 where the images' own is 1.164), and one legacy output alone raised a TypeError."""
    from hf_specdec.speculative import pooled_statistics, speculative_sample
    from hf_specdec.speculative.legacy import legacy_speculative_sample
    from tests.conftest import tiny_model

    teacher, draft = tiny_model(0, num_hidden_layers=2), tiny_model(7, num_hidden_layers=1)
    prompt = teacher.class_prompt([0, 1, 2, 0])
    legacy = legacy_speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False)
    engine = speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False, mode="eager")
    assert torch.equal(legacy.sequences, engine.sequences)
    alone = pooled_statistics(legacy)
    assert alone == pooled_statistics([legacy]) and alone["tokens_per_image_round"] is None
    assert alone["tokens_per_teacher_call"] == pytest.approx(engine.tokens_per_teacher_call)
    assert pooled_statistics([legacy, engine])["tokens_per_image_round"] is None


def test_a_class_column_of_another_name_a_huge_resolution_and_a_folder_as_grid_file_are_named(tmp_path):
    """A `class` column was ignored (the folder became one class), `--resolution 3200` built the dataset at that
    size, and a folder given as the grid's file got Pillow's "unknown file extension"."""
    from hf_specdec.data import DataArguments, load_imagefolder
    from hf_specdec.images import save_image_grid

    root = _folder(tmp_path / "meta", ["flat"], n=8)
    rows = [f"{i}.png,{'cat' if i % 2 else 'dog'}" for i in range(8)]
    (root / "flat" / "metadata.csv").write_text("file_name,class\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"has a column 'class' but no `label`.*rename 'class' to `label`"):
        load_imagefolder(str(root / "flat"), val_fraction=0.25, test_fraction=0.25)
    with pytest.raises(ValueError, match=r"`resolution` must be in \[8, 1024\]"):
        DataArguments(resolution=3200)
    with pytest.raises(ValueError, match=r"`path` .* is a folder: give a file name"):
        save_image_grid(torch.zeros(2, 3, 8, 8), str(tmp_path))


def test_a_zero_uniform_never_wins_the_race_or_passes_a_zero_block_weight():
    """Float32 uniforms are 0 with probability 2**-24: `-log(1 - u)` made that E = 0, a certain win whatever the code's
    p (plain decoding drew 32 codes of total mass 1e-6 in 40,000 draws at K = 16,384), and `eta <= h` let eta = 0 end a
    block where h = 0 (past a row's end)."""
    from hf_specdec.speculative import block_accept, plain_sample
    from hf_specdec.speculative.sampling import block_weights, exponential_from_uniform, sample_categorical

    assert exponential_from_uniform(torch.zeros(1)).item() == float("inf")
    weights = torch.tensor([1e-12, 0.5, 0.5])
    u = torch.tensor([0.0, 0.5, 0.25])  # the rare code gets the zero uniform
    assert sample_categorical(weights, exponentials=exponential_from_uniform(u)).item() != 0
    p = torch.tensor([[[0.9, 0.1], [0.5, 0.5], [0.5, 0.5]]])
    q = torch.tensor([[[0.1, 0.9], [0.5, 0.5]]])
    drafts, lengths = torch.tensor([[1, 0]]), torch.tensor([1])
    assert block_weights(p, q, drafts, lengths)[1][0, 1] == 0  # draft 2 lies past the row's end
    tau, _ = block_accept(p, q, drafts, eta=torch.tensor([[0.5, 0.0]]), exponentials=torch.ones(1, 2), lengths=lengths)
    assert tau.item() == 0
    from hf_specdec import VQGPTConfig, VQGPTForCausalLM

    torch.manual_seed(0)  # end to end: codes far below 2**-24 are (all but) never drawn
    teacher = VQGPTForCausalLM(VQGPTConfig(codebook_size=16384, num_classes=2, grid_h=1, grid_w=2, hidden_size=32,
                                           num_hidden_layers=1, num_attention_heads=4, dropout=0.0)).eval()
    with torch.no_grad():
        teacher.lm_head.weight.mul_(100.0)
        prompt = teacher.class_prompt([1] * 20_000)
        p = teacher(prompt[:1]).logits[0, -1].float().softmax(-1).double()
    rare = p < 2**-26
    assert p[rare].sum() * 20_000 < 0.01  # expected draws of them
    out = plain_sample(teacher, prompt, max_new_tokens=1, generator=torch.Generator().manual_seed(0), mode="eager",
                       batch_size=2_000)
    assert rare[out[:, 1]].sum() <= 1, int(rare[out[:, 1]].sum())  # the old race: ~20 (one per zero uniform)


def test_a_feature_draft_made_for_a_half_precision_teacher_takes_its_dtype():
    """`make_feature_draft(bf16_teacher)` gave a float32 draft that the sampler then refused (`from_pretrained` of a
    saved draft follows its teacher's dtype)."""
    from hf_specdec import speculative_sample
    from hf_specdec.models import make_feature_draft
    from tests.conftest import tiny_model

    teacher = tiny_model(0, num_hidden_layers=2).to(torch.bfloat16)
    draft = make_feature_draft(teacher, num_layers=1)
    assert next(draft.parameters()).dtype == torch.bfloat16
    out = speculative_sample(teacher, draft, teacher.class_prompt([0, 1]), gamma=2, mode="eager")
    assert out.sequences.shape == (2, teacher.config.max_position_embeddings)
