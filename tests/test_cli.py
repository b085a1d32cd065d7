"""Every script refuses bad input with one line on stderr naming the option, a non-zero exit status and no traceback;
YAML values are converted to the dataclass field types and checked."""

import json
import shutil

import pytest
import torch

from hf_specdec.cli import UsageError, parse_args
from hf_specdec.distill import DistillArguments
from hf_specdec.training import TrainingArguments
from tests.utils import CHECKPOINTS, python_env, run_python, run_script, truncate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    damaged = tmp / "damaged-teacher"
    shutil.copytree(CHECKPOINTS / "teacher", damaged, ignore=shutil.ignore_patterns("checkpoints"))
    truncate(damaged / "model.safetensors")
    (tmp / "empty" / "notes").mkdir(parents=True)
    (tmp / "list-metrics" / "draft").mkdir(parents=True)
    (tmp / "list-metrics" / "draft" / "distill_metrics.json").write_text("[1, 2]")
    configs = {
        "float-for-int": "student_id: 4\nmax_steps: 2.5\n",
        "word-for-float": "student_id: 4\nlearning_rate: fast\n",
        "unknown-key": "student_id: 4\nnot_a_field: 1\n",
        "scalar-for-list": "student_id: 4\nteacher_layers: 3\n",
        "not-yaml": "student_id: [4\n",
    }
    for name, text in configs.items():
        (tmp / f"{name}.yaml").write_text(text)
    (tmp / "a-file").write_text("in the way of an output folder")
    return tmp


BAD_INPUT = [
    # script, arguments ({tmp} is a temporary folder), words the error line must contain
    ("generate.py", ["--temperature", "0"], ["temperature"]),
    ("generate.py", ["--temperature", "nan"], ["temperature"]),
    ("generate.py", ["--top_k", "0"], ["top_k"]),
    ("generate.py", ["--top_k", "2.5"], ["top_k", "invalid int"]),
    ("generate.py", ["--gamma", "0"], ["gamma"]),
    ("generate.py", ["--mode", "fast"], ["mode"]),
    ("generate.py", ["--verification", "tree"], ["verification", "block"]),
    ("generate.py", ["--freeze_weights", "true"], ["freeze_weights", "compile"]),
    ("generate.py", ["--gamma", "65"], ["gamma", "64"]),
    ("generate.py", ["--guidance_scale", "inf"], ["guidance_scale"]),
    ("generate.py", ["--samples_per_class", "0"], ["samples_per_class"]),
    ("generate.py", ["--batch_size", "0"], ["batch_size"]),
    ("generate.py", ["--repeats", "0"], ["repeats", ">= 1"]),
    ("generate.py", ["--method", "self-speculative", "--self_speculative_layers", "12"], ["self_speculative_layers"]),
    # options the chosen method does not read (were ignored: a named draft replaced by the teacher's first layers)
    ("generate.py", ["--method", "self-speculative", "--assistant", "checkpoints/digits/draft-2L"], ["assistant", "self-speculative"]),
    ("generate.py", ["--method", "plain", "--gamma", "3"], ["gamma", "'plain' does not use it"]),
    ("generate.py", ["--method", "speculative", "--self_speculative_layers", "3"], ["self_speculative_layers", "drop"]),
    ("generate.py", ["--classes", "12"], ["classes"]),
    ("generate.py", ["--rows", "2"], ["rows", "unconditional"]),  # was ignored for a class-conditional teacher
    ("generate.py", ["--teacher", "{tmp}/missing"], ["teacher", "missing"]),
    ("generate.py", ["--teacher", "{tmp}/damaged-teacher"], ["teacher", "damaged-teacher/model.safetensors", "again"]),
    ("generate.py", ["--assistant", "checkpoints/digits/vq-tokenizer"], ["assistant"]),
    ("generate.py", ["--method", "magic"], ["method"]),
    ("generate.py", ["--device", "gpu0"], ["device", "gpu0"]),
    ("benchmark.py", ["--device", "nan"], ["device", "nan"]),
    ("engine_benchmark.py", ["--device", "-1"], ["device", "-1"]),
    ("model_size_benchmark.py", ["--device", "tpu"], ["device", "tpu"]),
    ("evaluate_quality.py", ["--device", "cuda:x"], ["device", "cuda:x"]),
    ("paired_benchmark.py", ["gpu0", "2", "d=checkpoints/digits/draft-1L"], ["device", "gpu0"]),
    ("paired_benchmark.py", ["cpu", "2", "d=checkpoints/digits/draft-1L", "--python_wrapper"], ["python_wrapper"]),
    ("paired_benchmark.py", ["cpu", "2", "d=checkpoints/digits/draft-1L", "--frozen"], ["frozen", "compile"]),
    ("paired_benchmark.py", ["cpu", "2", "d=checkpoints/digits/draft-1L", "--dynamo_guards"], ["dynamo_guards", "compile"]),
    ("generate.py", ["--output", "{tmp}/grid.txt"], ["output", ".png"]),
    ("generate.py", ["--output", "{tmp}/a-file/grid.png"], ["output", "a-file", "is a file"]),
    ("generate.py", ["--output", "{tmp}"], ["output", "is a folder"]),
    ("train_teacher.py", ["--output_dir", "{tmp}/a-file"], ["output_dir", "is a file"]),
    ("distill.py", ["--student_id", "4", "--output_dir", "{tmp}/a-file/run"], ["output_dir", "a-file", "is a file"]),
    ("train_classifier.py", ["--output_dir", "{tmp}/a-file"], ["output_dir", "is a file"]),
    ("benchmark.py", ["--output_dir", "{tmp}/a-file"], ["output_dir", "is a file"]),
    ("engine_benchmark.py", ["--output_dir", "{tmp}/a-file"], ["output_dir", "is a file"]),
    ("evaluate_quality.py", ["--output_dir", "{tmp}/a-file"], ["output_dir", "is a file"]),
    ("model_size_benchmark.py", ["--output_dir", "{tmp}/a-file"], ["output_dir", "is a file"]),
    ("generate.py", ["--no_such_option", "1"], ["no_such_option"]),
    ("distill.py", ["--student_id", "7"], ["student_id"]),
    ("distill.py", ["{tmp}/float-for-int.yaml"], ["max_steps", "integer", "2.5"]),
    ("distill.py", ["{tmp}/word-for-float.yaml"], ["learning_rate", "number", "fast"]),
    ("distill.py", ["{tmp}/unknown-key.yaml"], ["not_a_field"]),
    ("distill.py", ["{tmp}/scalar-for-list.yaml"], ["teacher_layers", "list"]),
    ("distill.py", ["{tmp}/not-yaml.yaml"], ["not-yaml.yaml", "YAML"]),
    ("distill.py", ["{tmp}/missing.yaml"], ["missing.yaml"]),
    ("distill.py", ["--student_id", "4", "--gen_top_k", "0"], ["gen_top_k"]),
    # inf passes `> 0` checks and trains a NaN model that saves and exits 0: every float of a run must be finite
    ("distill.py", ["--student_id", "4", "--learning_rate", "inf"], ["learning_rate", "finite"]),
    ("distill.py", ["--student_id", "4", "--weight_decay", "inf"], ["weight_decay", "finite"]),
    ("distill.py", ["--student_id", "4", "--kd_temperature", "inf"], ["kd_temperature", "finite"]),
    ("distill.py", ["--student_id", "4", "--kl_weight", "inf"], ["kl_weight", "finite"]),
    ("distill.py", ["--student_id", "4", "--cfg_scale", "nan"], ["cfg_scale", "finite"]),
    ("train_teacher.py", ["--max_grad_norm", "inf"], ["max_grad_norm", "finite"]),
    ("generate.py", ["--tokenizer", "checkpoints/digits/classifier"], ["tokenizer", "DigitsClassifier", "VQTokenizer"]),
    ("train_teacher.py", ["--max_steps", "0"], ["max_steps"]),
    ("train_teacher.py", ["--mixed_precision", "fp8"], ["mixed_precision"]),
    ("train_teacher.py", ["--adam_beta2", "1.5"], ["adam_beta2"]),
    ("train_teacher.py", ["--learning_rate", "nan"], ["learning_rate"]),
    ("train_vqvae.py", ["--reconstruction_loss", "huber"], ["reconstruction_loss"]),
    ("train_teacher.py", ["--num_entropy_samples", "-1"], ["num_entropy_samples"]),
    ("train_vqvae.py", ["--latent_channels", "-1"], ["latent_channels"]),
    ("train_vqvae.py", ["--layers_per_block", "0"], ["layers_per_block"]),
    ("train_vqvae.py", ["--norm_num_groups", "0"], ["norm_num_groups"]),
    ("train_vqvae.py", ["--vq_embed_dim", "-1"], ["vq_embed_dim"]),
    ("train_vqvae.py", ["--block_out_channels", "32", "48"], ["block_out_channels", "norm_num_groups"]),
    ("train_vqvae.py", ["--codebook_size", "1"], ["codebook_size"]),
    ("train_vqvae.py", ["--ema_decay", "1.0"], ["ema_decay"]),
    ("train_vqvae.py", ["--commitment_beta", "nan"], ["commitment_beta"]),
    ("train_vqvae.py", ["--dead_code_threshold", "-1"], ["dead_code_threshold"]),
    ("train_vqvae.py", ["--seed", "-1"], ["seed"]),
    ("train_vqvae.py", ["--split_seed", "-1"], ["split_seed"]),
    ("distill.py", ["--student_preset", "huge"], ["student_preset"]),
    ("distill.py", ["--student_id", "4", "--tokenizer_path", "checkpoints/photos/vq-tokenizer"], ["tokenizer_path", "256"]),
    ("distill.py", ["--student_id", "4", "--resolution", "64"], ["tokenizer_path", "(16, 16)", "resolution"]),
    ("distill.py", ["--student_id", "4", "--dataset", "photos", "--crops_per_photo", "10", "--token_cache_dir", "{tmp}/tc"],
     ["dataset", "china"]),
    ("evaluate_quality.py", ["--checkpoints_dir", "{tmp}/missing"], ["checkpoints_dir"]),
    ("engine_benchmark.py", ["--checkpoints_dir", "{tmp}/missing"], ["checkpoints_dir"]),
    ("benchmark.py", ["--checkpoints_dir", "{tmp}/missing"], ["checkpoints_dir"]),
    ("engine_benchmark.py", ["--extra_gammas", "-1"], ["extra_gammas"]),
    ("engine_benchmark.py", ["--time_budget_s", "-1"], ["time_budget_s"]),
    ("engine_benchmark.py", ["--stream_images", "-1"], ["stream_images"]),
    ("train_teacher.py", ["--hidden_size", "100", "--num_attention_heads", "3"], ["hidden_size", "num_attention_heads"]),
    ("train_teacher.py", ["--dropout", "1.0"], ["dropout"]),
    ("train_teacher.py", ["--preset", "huge"], ["preset"]),
    ("train_teacher.py", ["--crops_per_photo", "0"], ["crops_per_photo"]),
    ("train_teacher.py", ["--resolution", "64"], ["resolution", "32x32", "--resolution 32"]),
    ("train_teacher.py", ["--resolution", "30"], ["resolution", "32x32"]),
    ("train_vqvae.py", ["--resolution", "30"], ["resolution", "multiple of 4"]),
    ("precompute_tokens.py", ["--resolution", "64", "--token_cache_dir", "{tmp}/tc"], ["resolution", "32x32"]),
    ("distill.py", ["--student_id", "4", "--val_fraction", "0.6", "--test_fraction", "0.5"], ["val_fraction"]),
    ("precompute_tokens.py", ["--tokenizer_path", "{tmp}/missing"], ["tokenizer_path"]),
    ("precompute_tokens.py", ["--dataset", "imagefolder"], ["data_dir"]),
    ("train_classifier.py", ["--data_dir", "{tmp}"], ["data_dir", "imagefolder"]),
    ("train_teacher.py", ["--repo_id", "me/my-images"], ["repo_id", "mini-imagenet-dogs"]),
    ("benchmark.py", ["--gammas", "0"], ["gammas"]),
    ("benchmark.py", ["--warmup", "-1"], ["warmup"]),
    ("benchmark.py", ["--drafts", "no-such-draft", "--output_dir", "{tmp}/bench"], ["drafts", "no-such-draft"]),
    ("benchmark.py", ["--tokenizer", "draft-1L", "--output_dir", "{tmp}/bench"], ["tokenizer", "draft-1L"]),
    ("benchmark.py", ["--gammas", "4", "65", "--output_dir", "{tmp}/bench"], ["gammas", "64"]),
    ("evaluate_quality.py", ["--gamma", "65"], ["gamma", "64"]),
    ("benchmark.py", ["--temperature", "-1", "--output_dir", "{tmp}/bench"], ["temperature"]),
    ("evaluate_quality.py", ["--batch_size", "0"], ["batch_size"]),
    ("evaluate_quality.py", ["--dataset", "photos", "--crops_per_photo", "10"], ["dataset", "china"]),
    ("evaluate_quality.py", ["--resolution", "64"], ["tokenizer", "resolution"]),
    ("evaluate_quality.py", ["configs/benchmark/photos-quality.yaml", "--classifier", "../digits/classifier",
                             "--crops_per_photo", "10"], ["classifier", "digits"]),
    ("train_classifier.py", ["--epochs", "0"], ["epochs"]),
    ("push_to_hub.py", ["--checkpoints_dir", "{tmp}/missing", "--dry_run"], ["checkpoints_dir", "models"]),
    ("push_to_hub.py", ["--checkpoints_dir", "{tmp}/empty", "--dry_run"], ["checkpoints_dir", "holds no model folders"]),
    ("push_to_hub.py", ["--models", "draft-1L", "draft-1L", "--dry_run"], ["models", "['draft-1L'] more than once"]),
    ("push_to_hub.py", ["--namespace", "my org", "--dry_run"], ["namespace", "my org/digits-"]),
    ("push_to_hub.py", ["--benchmark_results", "{tmp}/missing.json", "--dry_run"], ["benchmark_results", "missing.json"]),
    ("engine_benchmark.py", ["--no_such_option", "1"], ["no_such_option"]),
    ("paired_benchmark.py", ["cpu", "many", "d=checkpoints/digits/draft-1L"], ["reps"]),
    ("paired_benchmark.py", ["cpu", "0", "d=checkpoints/digits/draft-1L"], ["reps"]),
    ("paired_benchmark.py", ["cpu", "2", "draft"], ["name=path"]),
    ("paired_benchmark.py", ["cpu", "2", "a=checkpoints/digits/draft-1L", "a=checkpoints/digits/draft-2L"], ["['a']", "twice"]),
    ("paired_benchmark.py", ["cpu", "2", "d=checkpoints/digits/draft-1L", "--block_gamma", "0"], ["block_gamma", ">= 1"]),
    ("paired_benchmark.py", ["cpu", "2", "d=checkpoints/digits/draft-1L", "--gammas", "4", "100"], ["gammas", "64-token grid"]),
    ("paired_benchmark.py", ["cpu", "2", "d=checkpoints/digits/draft-1L", "--gammas", "0"], ["gammas"]),
    ("model_size_benchmark.py", ["--draft_layers", "0"], ["draft_layers"]),
    ("model_size_benchmark.py", ["--sizes", "gpt-5"], ["sizes"]),
    ("model_size_benchmark.py", ["--sizes", "digits-12x128", "--draft_layers", "12"], ["draft_layers", "12 layers"]),
    ("model_size_benchmark.py", ["--gammas", "33"], ["gammas", "at most 32 for digits-12x128"]),
    ("summarize_checkpoints.py", ["{tmp}/missing"], ["folder"]),
    ("summarize_checkpoints.py", ["{tmp}/empty"], ["folder", "holds no model folders"]),
    ("summarize_checkpoints.py", ["{tmp}/list-metrics"], ["distill_metrics.json", "list"]),
]


@pytest.mark.parametrize("script, args, words", BAD_INPUT, ids=[f"{s}-{' '.join(a)}" for s, a, _ in BAD_INPUT])
def test_scripts_refuse_bad_input_in_one_line(script, args, words, files):
    result = run_script(script, *[a.replace("{tmp}", str(files)) for a in args])
    assert result.returncode == 2, result.returncode  # bad input, also when found after parsing (argparse's status)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), result.stderr[-3000:]
    for word in words:
        assert word.replace("{tmp}", str(files)) in lines[0], lines[0]


def test_a_script_run_by_python_prints_one_line():
    """The same in a fresh `python scripts/distill.py` (this interpreter, not one from PATH): exit status 2."""
    result = run_python(["scripts/distill.py", "--student_id", "7"], env=python_env(HF_HUB_DISABLE_PROGRESS_BARS="1"),
                        timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "distill.py: error: `student_id` must be one of [1, 2, 3, 4], got 7."
    ], result.stderr[-3000:]


def test_an_unreachable_hub_is_one_line_naming_the_endpoint(tmp_path):
    """huggingface_hub raises its HTTP library's ConnectError, which is no `ConnectionError`: it left a traceback."""
    result = run_python(["scripts/push_to_hub.py", "--namespace", "probe-org", "--models", "draft-1L"],
                        env=python_env(HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="x", HF_HOME=str(tmp_path)), timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("push_to_hub.py: error: cannot reach the Hub at http://127.0.0.1:9 "
                                                   "(ConnectError"), result.stderr[-3000:]


def test_yaml_values_take_the_field_types(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("student_id: 4\nlearning_rate: 3e-4\nmax_steps: '7'\ncfg_scale: null\n"
                      "init_from_teacher: false\noutput_dir: 2024\n")
    distill, training = parse_args((DistillArguments, TrainingArguments), [config])
    assert training.learning_rate == 3e-4 and isinstance(training.learning_rate, float)  # YAML reads 3e-4 as a str
    assert training.max_steps == 7 and distill.cfg_scale is None
    assert distill.init_from_teacher is False and training.output_dir == "2024"
    with pytest.raises(UsageError, match="c.yaml looks like a config file: it must be the first argument"):
        parse_args((DistillArguments, TrainingArguments), ["--max_steps", "9", config])  # was "unrecognized arguments"
    (tmp_path / "layers.YAML").write_text("student_id: 4\nteacher_layers: [0, 3, 7, 11]\n")
    assert parse_args((DistillArguments, TrainingArguments), [tmp_path / "layers.YAML"])[0].teacher_layers == [0, 3, 7, 11]
    config.write_text("student_id: 4\nlearning_rate: 3e-4\nmax_steps: '7'\ninit_from_teacher: false\n")
    distill, training = parse_args((DistillArguments, TrainingArguments), [config, "--max_steps", "9"])
    assert training.max_steps == 9  # the command line wins

    for text, field in [("max_steps: 2.5", "max_steps"), ("max_steps: true", "max_steps"),
                        ("learning_rate: fast", "learning_rate"), ("init_from_teacher: maybe", "init_from_teacher"),
                        ("teacher_layers: [0, 1.5]", "teacher_layers"), ("max_steps: null", "max_steps"),
                        ("report_to: [wandb]", "report_to")]:
        config.write_text(f"student_id: 4\n{text}\n")
        with pytest.raises(UsageError, match=f"`{field}`"):
            parse_args((DistillArguments, TrainingArguments), [config])
    with pytest.raises(UsageError, match="student_id"):  # a dataclass check is a usage error too
        parse_args((DistillArguments, TrainingArguments), ["--student_id", "7"])
    assert issubclass(UsageError, ValueError)


def test_yaml_keys_given_twice_are_refused_and_dashes_read_like_the_command_line(tmp_path):
    """PyYAML keeps the last of two equal keys without a word; `max-steps` (the command line's spelling) was an
    unknown key."""
    config = tmp_path / "c.yaml"
    config.write_text("student_id: 4\nmax-steps: 5\n")
    assert parse_args((DistillArguments, TrainingArguments), [config])[1].max_steps == 5
    for text, words in [("max_steps: 5\nmax_steps: 6", "'max_steps' is given twice"),
                        ("max-steps: 5\nmax_steps: 6", "'max-steps' and 'max_steps'")]:
        config.write_text(f"student_id: 4\n{text}\n")
        with pytest.raises(UsageError, match=words):
            parse_args((DistillArguments, TrainingArguments), [config])
    config.write_text("base: &base {max_steps: 5}\n")  # anchors and merge keys still load (and are then unknown keys)
    with pytest.raises(UsageError, match=r"unknown keys .*\['base'\]"):
        parse_args((DistillArguments, TrainingArguments), [config])



def test_command_line_size_replaces_the_configs(tmp_path):
    """The student's size is one choice: a config's `student_preset` gives way to `--student_layers` (or the others),
    while two sizes on the command line, or none anywhere, stay an error that names them."""
    config = tmp_path / "c.yaml"
    config.write_text("student_preset: draft-1L\nmax_steps: 5\n")
    distill, _ = parse_args((DistillArguments, TrainingArguments), [config])
    assert distill.student_preset == "draft-1L" and distill.student_layers is None
    for flags, expected in [(["--student_layers", "6"], ("student_layers", 6)),
                            (["--student-layers=3"], ("student_layers", 3)),
                            (["--student_id", "2"], ("student_id", 2)),
                            (["--student_preset", "student-6L"], ("student_preset", "student-6L"))]:
        distill, training = parse_args((DistillArguments, TrainingArguments), [config, *flags])
        sizes = {name: getattr(distill, name) for name in ("student_id", "student_preset", "student_layers")}
        assert sizes == {**dict.fromkeys(sizes), expected[0]: expected[1]}, flags
        assert training.max_steps == 5  # the rest of the config stays
    with pytest.raises(UsageError, match="student_layers"):
        parse_args((DistillArguments, TrainingArguments), [config, "--student_layers", "6", "--student_id", "2"])
    config.write_text("max_steps: 5\n")
    with pytest.raises(UsageError, match="student_preset"):
        parse_args((DistillArguments, TrainingArguments), [config])

def test_summary_rows_for_models_without_metrics_or_evaluations(tmp_path):
    """A downloaded model (config.json, no metrics) gets a row with its size; a run that never evaluated
    (`val_loss` null) leaves that cell blank instead of a TypeError."""
    shutil.copytree(CHECKPOINTS / "draft-1L", tmp_path / "draft", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(CHECKPOINTS / "teacher", tmp_path / "downloaded", ignore=shutil.ignore_patterns("*.json"))
    (tmp_path / "downloaded" / "config.json").write_text((CHECKPOINTS / "teacher" / "config.json").read_text())
    metrics = json.loads((tmp_path / "draft" / "distill_metrics.json").read_text())
    (tmp_path / "draft" / "distill_metrics.json").write_text(json.dumps({**metrics, "val_loss": None, "val_perplexity": None}))
    result = run_script("summarize_checkpoints.py", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    downloaded, draft = [line for line in result.stdout.splitlines() if line.startswith(("| draft", "| downloaded"))]
    assert f"| {metrics['alpha']:.3f} (teacher) |" in draft and "| tv, lmbda=" in draft and "|  |  |" in draft
    assert "(no training_metrics.json / distill_metrics.json)" in downloaded
    assert f"{(CHECKPOINTS / 'teacher' / 'model.safetensors').stat().st_size / 2**20:.1f} MiB" in downloaded


def test_check_device_names_the_argument():
    from hf_specdec.bench.timing import check_device

    assert check_device("cpu") == torch.device("cpu") and check_device(torch.device("cpu")).type == "cpu"
    bad = ["gpu", "-1", "nan", "", "meta", "cuda:x", None, 3.5] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for value in bad + [f"cuda:{torch.cuda.device_count()}"]:
        with pytest.raises(ValueError, match="`eval_device`"):
            check_device(value, "eval_device")


def test_cuda_device_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = run_script("generate.py", "--device", "cuda")
    assert result.returncode != 0 and "`device`" in result.stderr and "Traceback" not in result.stderr


def test_a_shared_field_the_script_does_not_read_is_warned_about_once_parsed(tmp_path, capsys):
    """`--token_cache_dir` given to a script that caches no tokens (the tokenizer's or the classifier's training) is
    harmless and often comes with a pipeline's shared options, but must not pass for having taken effect."""
    from hf_specdec.data import DataArguments

    why = {"token_cache_dir": "it caches no tokens"}
    parse_args((DataArguments,), ["--token_cache_dir", str(tmp_path / "tc")], unread=why)
    assert "`token_cache_dir` is not read by" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(f"token_cache_dir: {tmp_path / 'tc'}\n")
    parse_args((DataArguments,), [str(config)], unread=why)
    assert "`token_cache_dir` is not read by" in capsys.readouterr().err
    parse_args((DataArguments,), ["--resolution", "16"], unread=why)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="resolution"):  # a refused value: the error alone, no warning before it
        parse_args((DataArguments,), ["--token_cache_dir", str(tmp_path / "tc"), "--resolution", "4"], unread=why)
    assert capsys.readouterr().err == ""
