"""Bad input from the third reliability hunt: each refused with a `ValueError` naming the argument, before the work
(or, where nothing is wrong but something would be lost, refused before it is)."""

import os
import shutil

import pytest
import torch

from hf_specdec.hub import check_output_not_input
from hf_specdec.training.trainer import TrainingArguments
from tests.utils import CHECKPOINTS, run_script


# -- a run that writes where it reads ----------------------------------------------------------------------------

@pytest.mark.parametrize("script, args, named", [
    ("distill.py", ["--student_preset", "draft-1L", "--teacher_path", "{copy}/teacher", "--tokenizer_path",
                    "{copy}/vq-tokenizer", "--output_dir", "{copy}/teacher"], "teacher_path"),
    ("distill.py", ["--student_preset", "draft-1L", "--teacher_path", "{copy}/teacher", "--tokenizer_path",
                    "{copy}/vq-tokenizer", "--output_dir", "{copy}/sub/../vq-tokenizer"], "tokenizer_path"),
    ("train_teacher.py", ["--preset", "draft-1L", "--tokenizer_path", "{copy}/vq-tokenizer", "--output_dir",
                          "{copy}/vq-tokenizer/"], "tokenizer_path"),
])
def test_output_dir_that_is_an_input_model_is_refused_before_it_is_overwritten(tmp_path, script, args, named):
    """It exited 0 with the teacher (or tokenizer) replaced by the run's own model: the shipped teacher, once."""
    copy = tmp_path / "copy"
    for name in ("teacher", "vq-tokenizer"):
        shutil.copytree(CHECKPOINTS / name, copy / name)
    (copy / "sub").mkdir()
    before = {name: (copy / name / "config.json").read_bytes() for name in ("teacher", "vq-tokenizer")}
    result = run_script(script, *[a.replace("{copy}", str(copy)) for a in args], "--max_steps", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "`output_dir`" in result.stderr and f"is the `{named}` folder" in result.stderr, result.stderr
    assert before == {name: (copy / name / "config.json").read_bytes() for name in before}
    assert sorted(os.listdir(copy / "teacher")) == sorted(os.listdir(CHECKPOINTS / "teacher"))


def test_output_dir_inside_the_image_folder_is_refused(tmp_path):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="`output_dir` .* inside the `data_dir` image folder"):
        check_output_not_input(str(tmp_path / "images" / "run"), data_dir=str(tmp_path / "images"))
    check_output_not_input(str(tmp_path / "run"), data_dir=str(tmp_path / "images"), teacher_path="org/teacher")


def test_a_fresh_run_into_an_earlier_runs_checkpoints_is_refused(tmp_path):
    """Two runs' checkpoints were mixed without a word, and a later `latest` resumed the other run."""
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"`output_dir` .* holds checkpoints of an earlier run \(up to checkpoint-4\)"
                                         ".*--resume_from_checkpoint latest"):
        TrainingArguments(output_dir=str(tmp_path))
    TrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint="latest")
    (tmp_path / "checkpoints" / "checkpoint-4").rmdir()
    TrainingArguments(output_dir=str(tmp_path))  # an empty checkpoints folder holds no run


@pytest.mark.parametrize("line, named", [("learning_rate: {a: 1}", "`learning_rate`"), ("max_steps: {}", "`max_steps`"),
                                         ("output_dir: {x: '{0}'}", "`output_dir`")])
def test_a_yaml_mapping_as_a_value_is_named_not_a_traceback(tmp_path, line, named):
    """The message was `str.format`ted once more, so the mapping's braces were read as format fields (KeyError)."""
    config = tmp_path / "c.yaml"
    config.write_text(line + "\n")
    result = run_script("train_teacher.py", config)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "(dict)" in lines[0], lines


# -- numbers too small or too large for float32 logits ------------------------------------------------------------

def test_tiny_temperatures_sample_the_greedy_image_and_huge_guidance_is_refused():
    """`logits / 1e-38` overflowed to inf - inf = NaN, and every image came out all code 0 (exit status 0)."""
    from hf_specdec import plain_sample, speculative_sample
    from tests.utils import tiny_model

    teacher, draft = tiny_model(0), tiny_model(1, num_hidden_layers=1)
    prompt = teacher.class_prompt([0, 1])
    greedy = teacher.generate(prompt, do_sample=False)
    for temperature in (1e-30, 2e-38):
        assert torch.equal(speculative_sample(teacher, draft, prompt, temperature=temperature, gamma=3).sequences,
                           greedy), temperature
        assert torch.equal(plain_sample(teacher, prompt, temperature=temperature), greedy), temperature
    with pytest.raises(ValueError, match="`temperature` must be a finite number >= 1.18e-38"):
        speculative_sample(teacher, draft, prompt, temperature=1e-45)
    for call in (lambda: speculative_sample(teacher, draft, prompt, cfg_scale=1e300),
                 lambda: teacher.generate(prompt, do_sample=False, cfg_scale=-2e4)):
        with pytest.raises(ValueError, match=r"`cfg_scale` must be a finite number in \[-10000, 10000\]"):
            call()
    from hf_specdec.distill import DistillArguments

    for name in ("kd_temperature", "gen_temperature"):
        with pytest.raises(ValueError, match=f"`{name}` must be a finite number >= 0.01"):
            DistillArguments(student_id=4, **{name: 1e-40})


# -- generate(): what transformers would misread -------------------------------------------------------------------

def test_generate_refuses_lengths_that_are_not_integers_and_forced_tokens():
    from transformers import GenerationConfig

    from tests.utils import tiny_model

    teacher = tiny_model(0)
    prompt = teacher.class_prompt([0, 1])
    refused = [
        (dict(max_length=2.5), "`max_length` must be an integer"),  # returned (2, 3)
        (dict(max_length="10"), "`max_length` must be an integer"),  # TypeError
        (dict(min_new_tokens="5"), "`min_new_tokens` must be an integer"),
        (dict(forced_eos_token_id=3), "`forced_eos_token_id`"),  # overwrote every image's last code
        (dict(forced_bos_token_id=3), "`forced_bos_token_id`"),
        (dict(do_sample="no"), "`do_sample` must be True or False"),  # sampled
        (dict(attention_mask=torch.ones(2, 3)), r"`attention_mask` must be a tensor of the prompt's shape \(2, 1\)"),
        (dict(generation_config=GenerationConfig(min_new_tokens=10**4)), "`min_new_tokens`=10000 does not fit"),
    ]
    for kwargs, message in refused:
        with pytest.raises(ValueError, match=message):
            teacher.generate(prompt, **kwargs)
    assert teacher.generate(prompt, do_sample=False, max_length=3).shape == (2, 3)


def test_encoding_with_a_tokenizer_in_training_mode_leaves_its_ema_codebook_alone():
    from tests.utils import random_images, tiny_vq

    tokenizer = tiny_vq(use_ema=True)
    images = random_images(8)
    expected = tokenizer.encode_to_indices(images)
    state = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    tokenizer.train()
    for _ in range(5):
        assert torch.equal(tokenizer.encode_to_indices(images), expected)
    assert tokenizer.training and tokenizer.quantize.training  # the mode is the caller's
    assert all(torch.equal(v, state[k]) for k, v in tokenizer.state_dict().items())
    tokenizer.reconstruct(images)  # training itself still updates it
    assert not torch.equal(tokenizer.quantize.embedding.weight, state["quantize.embedding.weight"])


def test_a_model_on_the_meta_device_is_named_not_a_torch_error():
    """`Tensor.item() cannot be called on meta tensors`, from inside a value check."""
    import copy

    from hf_specdec import plain_sample, speculative_sample
    from tests.utils import tiny_model

    teacher, draft = tiny_model(0), tiny_model(1, num_hidden_layers=1)
    prompt = teacher.class_prompt([0, 1])
    empty = copy.deepcopy(teacher).to("meta")
    for call, named in ((lambda: empty.generate(prompt.to("meta")), "`model`"),
                        (lambda: empty.class_prompt([1]), "`model`"),
                        (lambda: plain_sample(empty, prompt), "`model`"),  # plain_sample(model, ...)
                        (lambda: speculative_sample(teacher, copy.deepcopy(draft).to("meta"), prompt), "`draft`")):
        with pytest.raises(ValueError, match=f"{named} is on the meta device: its weights are not loaded"):
            call()
    with pytest.raises(ValueError, match="`input_ids` is on the meta device"):
        teacher.generate(prompt.to("meta"))


def test_small_things_named_by_their_argument(tmp_path):
    from hf_specdec import speculative_sample
    from hf_specdec.bench.quality import QualityArguments
    from hf_specdec.bench.speed import BenchmarkArguments
    from hf_specdec.images import image_grid, to_rgb
    from tests.utils import tiny_model

    teacher, draft = tiny_model(0), tiny_model(1, num_hidden_layers=1)
    null = teacher.class_prompt(None, batch_size=2)
    for call in (lambda: speculative_sample(teacher, draft, null, do_sample=False, cfg_scale=5.0),
                 lambda: teacher.generate(null, do_sample=False, cfg_scale=5.0)):
        with pytest.raises(ValueError, match="`cfg_scale` 5.0 with null-token .* it would change nothing"):
            call()
    mixed = torch.cat([teacher.class_prompt([1]), null[:1]])  # a class among them: guided as asked
    speculative_sample(teacher, draft, mixed, do_sample=False, cfg_scale=5.0, max_new_tokens=2)
    with pytest.raises(ValueError, match="`image` must be a PIL image, got a str"):
        to_rgb("x.png")
    with pytest.raises(ValueError, match="`padding` must be an integer >= 0"):
        image_grid(torch.zeros(2, 3, 4, 4), padding=-1)
    with pytest.raises(ValueError, match=r"`gammas` lists \[2\] more than once"):
        BenchmarkArguments(gammas=[2, 2], output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`num_images` must be >= 2"):
        QualityArguments(num_images=1, output_dir=str(tmp_path))


@pytest.mark.parametrize("script", ["generate.py", "benchmark.py", "evaluate_quality.py"])
def test_every_seed_is_checked_before_the_models_load(script):
    result = run_script(script, "--seed", str(10**20))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"{script}: error: `seed` must be in [0, 2**32), got {10**20}."]


def test_a_tokenizer_or_its_input_on_the_meta_device_is_named():
    import copy

    from tests.utils import random_images, tiny_vq

    tokenizer = tiny_vq()
    images = random_images(2)
    codes = tokenizer.encode_to_indices(images)
    empty = copy.deepcopy(tokenizer).to("meta")
    for call in (lambda: empty.encode_to_indices(images), lambda: empty.decode_from_indices(codes)):
        with pytest.raises(ValueError, match="`tokenizer` is on the meta device"):
            call()
    with pytest.raises(ValueError, match="`images` is on the meta device"):
        tokenizer.encode_to_indices(images.to("meta"))
    with pytest.raises(ValueError, match="`indices` is on the meta device"):
        tokenizer.decode_from_indices(codes.to("meta"))


# -- image folders -----------------------------------------------------------------------------------------------

def _image_folder(root, counts):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name / f"img{i}.png")
    return root


@pytest.mark.parametrize("counts, named", [({"cat": 4, "dog": 4, "test": 4}, "cat/img0.png"),  # kept: `test` alone
                                           ({"cat": 4, "dog": 4, "my-test": 4}, "cat/img0.png")])
def test_an_image_folder_whose_names_read_as_splits_is_refused_not_cut(tmp_path, counts, named):
    """`datasets` took a `test` class folder for a split and silently dropped every other class."""
    from hf_specdec.data import load_imagefolder

    root = _image_folder(tmp_path / "images", counts)
    with pytest.raises(ValueError, match=f"8 image file\\(s\\) would be left out without a word: .*{named}"):
        load_imagefolder(str(root))
    _image_folder(tmp_path / "fine", {"cat": 10, "dog": 10, "bird": 10})
    assert load_imagefolder(str(tmp_path / "fine"))["train"].features["label"].names == ["bird", "cat", "dog"]


def test_a_linked_class_folder_and_a_decompression_bomb_are_named(tmp_path):
    from PIL import Image

    from hf_specdec.data import load_imagefolder

    root = _image_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    _image_folder(tmp_path / "elsewhere", {"bird": 4})
    os.symlink(tmp_path / "elsewhere" / "bird", root / "bird")
    with pytest.raises(ValueError, match="4 image file\\(s\\) would be left out .*bird/img0.png.*symlinked"):
        load_imagefolder(str(root))
    os.remove(root / "bird")
    Image.new("1", (14000, 14000)).save(root / "cat" / "huge.png")  # past PIL's decompression-bomb limit
    with pytest.raises(ValueError, match="1 image file\\(s\\) under `data_dir` cannot be read: .*huge.png"):
        load_imagefolder(str(root))


# -- training runs that repeat -------------------------------------------------------------------------------------

def test_the_seed_seeds_the_models_initialisation(tmp_path):
    """`set_seed` ran inside `train()`, after the script had built its model: two runs of one seed differed."""
    from hf_specdec.training import make_accelerator

    args = TrainingArguments(output_dir=str(tmp_path), seed=7)
    make_accelerator(args)
    first = torch.nn.Linear(4, 4).weight.detach().clone()
    torch.rand(5)  # whatever ran before
    make_accelerator(args)
    assert torch.equal(torch.nn.Linear(4, 4).weight, first)


def test_on_policy_distillation_resumes_exactly(tmp_path):
    """The on-policy draws came from one generator started at the seed, so a resumed run drew other samples."""
    from safetensors.torch import load_file

    common = ["--student_preset", "draft-1L", "--lmbda", "0.5", "--max_steps", "6", "--save_every", "3",
              "--per_device_batch_size", "4", "--eval_every", "0", "--num_alpha_prefixes", "2", "--warmup_steps", "1",
              "--checkpoints_total_limit", "0", "--resolution", "32", "--token_cache_dir", str(tmp_path / "tc"),
              "--num_workers", "0"]
    straight = run_script("distill.py", *common, "--output_dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "checkpoint-3",
                    tmp_path / "resumed" / "checkpoints" / "checkpoint-3")
    resumed = run_script("distill.py", *common, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint",
                         "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Resumed with another teacher in a folder of another name (paths may change between runs, models may not).
    from hf_specdec import VQGPTForCausalLM

    other = VQGPTForCausalLM.from_pretrained(CHECKPOINTS / "teacher")
    with torch.no_grad():
        other.lm_head.weight.mul_(1.05)
    other.save_pretrained(tmp_path / "other-teacher")
    moved = run_script("distill.py", *common, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint",
                       "latest", "--teacher_path", tmp_path / "other-teacher")
    assert moved.returncode == 2 and "`weights of teacher_path`" in moved.stderr, moved.stderr[-3000:]


# -- outputs and uploads ---------------------------------------------------------------------------------------------

def test_an_upload_plan_refuses_a_model_nobody_could_load(tmp_path):
    """A folder with no or truncated weights, or without the remote code its config names, was planned (exit 0)."""
    from hf_specdec.hub import upload_plan

    for name, damage in (("teacher", lambda f: os.remove(f / "model.safetensors")),
                         ("draft-1L", lambda f: os.truncate(f / "model.safetensors", 1000)),
                         ("student-4L", lambda f: os.remove(f / "modeling_vqgpt.py"))):
        folder = tmp_path / name
        shutil.copytree(CHECKPOINTS / name, folder)
        assert "model.safetensors" in upload_plan(str(folder))
        damage(folder)
        with pytest.raises(ValueError, match="`model_dir`"):
            upload_plan(str(folder))


@pytest.mark.parametrize("extension", [".psd", ".xbm", ".fits"])
def test_a_grid_format_pillow_cannot_write_is_refused_before_sampling(tmp_path, extension):
    from hf_specdec.bench.sample_grid import SampleGridArguments

    with pytest.raises(ValueError, match=f"`output` .*{extension}.*Pillow cannot write an RGB picture"):
        SampleGridArguments(output=str(tmp_path / f"grid{extension}"))
    SampleGridArguments(output=str(tmp_path / "grid.webp"))


def test_quality_output_inside_the_image_folder_is_refused(tmp_path):
    from hf_specdec.bench.quality import QualityArguments, evaluate_quality
    from hf_specdec.data import DataArguments

    root = _image_folder(tmp_path / "images", {"cat": 10, "dog": 10})
    data = DataArguments(dataset="imagefolder", data_dir=str(root))
    with pytest.raises(ValueError, match="`output_dir` .* inside the `data_dir` image folder"):
        evaluate_quality(QualityArguments(output_dir=str(root / "eval")), data)


def test_flat_labels_integer_gamma_and_one_line_warnings():
    from hf_specdec.pipeline import check_sampling_options, class_prompts
    from tests.utils import tiny_model

    teacher = tiny_model(0)
    with pytest.raises(ValueError, match=r"`labels` must be a flat batch of class ids .* got shape \(1, 2\)"):
        class_prompts(teacher, torch.tensor([[1, 2]]))  # gave 2 prompts
    assert class_prompts(teacher, torch.tensor(1)).shape == (1, 1)
    for gamma in (2.5, True):
        with pytest.raises(ValueError, match="`gamma` must be in"):
            check_sampling_options(teacher, None, gamma)
    from tests.utils import python_env, run_python

    result = run_python(["scripts/distill.py", "--student_id", "4", "--max_steps", "1", "--teacher_path",
                         "/nonexistent/t"], env=python_env(HF_HUB_DISABLE_PROGRESS_BARS="1"), timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 2, lines  # the warning and the error, one line each
    assert lines[0].startswith("distill.py: warning: `warmup_steps`") and lines[1].startswith("distill.py: error:")
