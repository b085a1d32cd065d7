"""Half-precision storage of drafts and students (`hf_specdec.hub.compact_weights`, `scripts/compact_checkpoints.py`):
half the bytes, the config's compute dtype on load, and speculative sampling with a compacted draft still exact."""

import hashlib
import json
import os

import pytest
import torch
from safetensors import safe_open

from hf_specdec import VQGPTForCausalLM
from hf_specdec.hub import compact_weights
from hf_specdec.speculative import speculative_sample
from tests.utils import CHECKPOINTS, run_script, tiny_model, tiny_vq


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_compacted_draft_loads_in_float32_with_rounded_weights_and_sampling_stays_exact(tmp_path, dtype):
    teacher, draft = tiny_model(seed=0), tiny_model(seed=1, num_hidden_layers=1)
    draft.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    before = os.path.getsize(weights)
    result = compact_weights(str(tmp_path), dtype)
    assert result["bytes_before"] == before and result["bytes_after"] == os.path.getsize(weights) < 0.55 * before
    assert 0 < result["max_abs_change"] < 0.05
    with safe_open(weights, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {getattr(torch, dtype)}

    loaded = VQGPTForCausalLM.from_pretrained(tmp_path).eval()
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for (name, original), (_, reloaded) in zip(draft.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(reloaded, original.to(getattr(torch, dtype)).float()), name
    assert not all(torch.equal(a, b) for a, b in zip(draft.parameters(), loaded.parameters()))

    prompts = teacher.class_prompt([0, 1, 2])
    expected = teacher.generate(prompts, do_sample=False, max_new_tokens=16)
    assert torch.equal(speculative_sample(teacher, loaded, prompts, gamma=3, do_sample=False).sequences, expected)

    again = compact_weights(str(tmp_path), dtype)  # already compact: nothing left to narrow
    assert again["bytes_after"] == again["bytes_before"] and again["max_abs_change"] == 0.0


def test_sharded_checkpoint_keeps_a_true_index(tmp_path):
    draft = tiny_model(seed=1, num_hidden_layers=2)
    draft.save_pretrained(tmp_path, max_shard_size="20KB")
    index_file = tmp_path / "model.safetensors.index.json"
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and index_file.exists()
    compact_weights(str(tmp_path), "float16")
    index = json.loads(index_file.read_text())
    stored = 0
    for shard in shards:
        with safe_open(tmp_path / shard, "pt") as f:
            stored += sum(f.get_tensor(k).numel() * 2 for k in f.keys())
    assert index["metadata"]["total_size"] == stored == sum(p.numel() * 2 for p in draft.state_dict().values())
    assert set(index["weight_map"].values()) == set(shards) and not list(tmp_path.glob(".compact-*"))
    loaded = VQGPTForCausalLM.from_pretrained(tmp_path)
    for (name, original), (_, reloaded) in zip(draft.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(reloaded, original.half().float()), name


def test_weights_beyond_half_range_are_refused_and_no_file_changes(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = 1e6  # float16 tops out at 65504
    model.save_pretrained(tmp_path)
    unchanged = digest(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"lm_head\.weight.*float16's range"):
        compact_weights(str(tmp_path), "float16")
    assert digest(tmp_path / "model.safetensors") == unchanged
    compact_weights(str(tmp_path), "bfloat16")  # bfloat16 has float32's range


def test_bad_arguments_are_refused_before_any_folder_is_rewritten(tmp_path):
    good = tmp_path / "good"
    tiny_model().save_pretrained(good)
    unchanged = digest(good / "model.safetensors")
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        compact_weights(str(good), "int8")
    for bad, match in [(tmp_path / "missing", "not a model folder"), (tmp_path, "not a model folder")]:
        result = run_script("compact_checkpoints.py", "--folders", good, bad)
        assert result.returncode != 0 and "`folders`" in result.stderr and match in result.stderr, result.stderr
    result = run_script("compact_checkpoints.py", "--folders", good, "--dtype", "float8")
    assert result.returncode != 0 and "`dtype` must be one of" in result.stderr
    assert run_script("compact_checkpoints.py").returncode != 0
    assert digest(good / "model.safetensors") == unchanged

    result = run_script("compact_checkpoints.py", "--folders", good)
    assert result.returncode == 0 and "MiB" in result.stdout and digest(good / "model.safetensors") != unchanged


@pytest.mark.parametrize("name", ["student-4L", "student-6L", "student-8L", "student-10L"])
def test_shipped_students_are_stored_in_half_and_load_in_float32(name):
    with safe_open(CHECKPOINTS / name / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert {p.dtype for p in VQGPTForCausalLM.from_pretrained(CHECKPOINTS / name).parameters()} == {torch.float32}


def test_a_draft_of_another_teacher_is_refused_before_anything_is_rewritten(tmp_path):
    draft, teacher = tmp_path / "draft", tmp_path / "teacher"
    tiny_model(codebook_size=8).save_pretrained(draft)
    tiny_model().save_pretrained(teacher)
    unchanged = digest(draft / "model.safetensors")
    result = run_script("compact_checkpoints.py", "--folders", draft, "--teacher_path", teacher)
    assert result.returncode != 0 and "`folders`" in result.stderr and "codebook_size" in result.stderr, result.stderr
    assert digest(draft / "model.safetensors") == unchanged

    tiny_model(seed=1).save_pretrained(draft)
    result = run_script("compact_checkpoints.py", "--folders", draft, "--teacher_path", teacher, "--num_sequences", 6,
                        "--output_json", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    row = json.load(open(tmp_path / "out.json"))["folders"][str(draft)]
    assert 0 < row["alpha_after"] <= 1 and abs(row["alpha_after"] - row["alpha_before"]) < 0.01


def test_teachers_and_tokenizers_are_not_rounded_unless_allowed(tmp_path):
    """They define the output: the script rewrote a teacher (even the `--teacher_path` folder) in place."""
    teacher, vq = tmp_path / "teacher", tmp_path / "vq"
    tiny_model().save_pretrained(teacher)
    (teacher / "training_metrics.json").write_text("{}")  # what train_teacher.py leaves
    tiny_vq().save_pretrained(vq)
    before = {p: digest(p / name) for p, name in ((teacher, "model.safetensors"), (vq, "diffusion_pytorch_model.safetensors"))}
    for folder, words in ((teacher, "a teacher"), (vq, "a VQTokenizer")):
        result = run_script("compact_checkpoints.py", "--folders", folder)
        assert result.returncode != 0 and words in result.stderr and "--allow_teacher" in result.stderr, result.stderr
    result = run_script("compact_checkpoints.py", "--folders", teacher, "--teacher_path", teacher, "--allow_teacher")
    assert result.returncode != 0 and "is the `teacher_path` itself" in result.stderr, result.stderr
    assert {p: digest(p / n) for p, n in ((teacher, "model.safetensors"), (vq, "diffusion_pytorch_model.safetensors"))} == before
    assert run_script("compact_checkpoints.py", "--folders", teacher, "--allow_teacher").returncode == 0
