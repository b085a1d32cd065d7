"""VQGPT: cache correctness, generation, classifier-free guidance, save/load, remote code, bad input."""

import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache, StaticCache

from hf_specdec import STUDENT_IDS, VQGPT_PRESETS, VQGPTConfig, VQGPTForCausalLM
from tests.utils import CHECKPOINTS, HIDE_HF_SPECDEC, python_env, run_python, tiny_config, tiny_model


def random_sequences(config, batch_size=2, length=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    length = length or config.num_image_tokens
    labels = torch.randint(0, config.num_classes, (batch_size,), generator=g)
    codes = torch.randint(0, config.codebook_size, (batch_size, length), generator=g)
    return torch.cat([(config.codebook_size + labels)[:, None], codes], dim=1)


@torch.no_grad()
def reference_greedy(model, prompt, steps):
    """Greedy decoding by full recomputation, no cache: the reference for every cached path."""
    ids = prompt
    for _ in range(steps):
        logits = model(ids, use_cache=False).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


# -- config -------------------------------------------------------------------------------------------------

def test_vocabulary_layout():
    config = tiny_config()
    assert config.vocab_size == 16 + 3 + 1
    assert config.null_token_id == 19
    assert config.max_position_embeddings == 1 + 16


@pytest.mark.parametrize(
    "field, value",
    [("num_classes", -1), ("codebook_size", 0), ("grid_h", 0), ("num_attention_heads", 5), ("dropout", 1.5),
     ("vocab_size", 7), ("max_position_embeddings", 3), ("initializer_range", float("nan")),
     ("layer_norm_eps", 0.0)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field if field != "num_attention_heads" else "num_attention_heads"):
        tiny_config(**{field: value})


@pytest.mark.parametrize("key, use", [("n_layer", "num_hidden_layers"), ("num_hidden_layer", "num_hidden_layers"),
                                      ("n_embd", "hidden_size"), ("grid_size", "grid_h"), ("codebok_size", "codebook_size")])
def test_config_refuses_other_names_for_its_fields(key, use):
    # a config keeps unknown keys as attributes: `n_layer=2` used to build a 12-layer model without a word
    with pytest.raises(ValueError, match=f"`{key}` is not a VQGPTConfig field: use `{use}"):
        tiny_config(**{key: 2})
    from hf_specdec.models.modeling_feature_draft import VQGPTFeatureDraftConfig
    with pytest.raises(ValueError, match="use `feature_layers`"):
        VQGPTFeatureDraftConfig(feature_layer=[1])


def test_config_keeps_unrelated_keys_and_loads_saved_configs(tmp_path, caplog):
    config = tiny_config(my_note="x", torch_dtype="float32", do_sample=True, tie_encoder_decoder=False)  # kept, as
    # transformers keeps them (a near miss of transformers' own `is_encoder_decoder` is not ours to correct)
    assert config.my_note == "x" and config.num_hidden_layers == tiny_config().num_hidden_layers
    config.save_pretrained(tmp_path)
    assert VQGPTConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()
    assert AutoConfig.from_pretrained(CHECKPOINTS / "teacher", trust_remote_code=True).num_hidden_layers == 12
    with pytest.raises(ValueError, match="holds a diffusers `VQTokenizer`, not a `vqgpt` model"):
        VQGPTForCausalLM.from_pretrained(CHECKPOINTS / "vq-tokenizer")  # it warned about 20 unknown keys, then OSError


def test_presets_and_students_share_width():
    assert [VQGPT_PRESETS[STUDENT_IDS[i]]["num_hidden_layers"] for i in (1, 2, 3, 4)] == [10, 8, 6, 4]
    teacher = VQGPTConfig.from_preset("teacher", hidden_size=64, num_attention_heads=4, codebook_size=32)
    assert teacher.num_hidden_layers == 12
    student = teacher.student_config("student-4L")
    assert (student.num_hidden_layers, student.hidden_size, student.codebook_size) == (4, 64, 32)
    assert teacher.student_config(1).num_hidden_layers == 1
    with pytest.raises(ValueError, match="preset"):
        VQGPTConfig.from_preset("huge")


# -- cache ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def test_cached_logits_equal_full_forward(model):
    ids = random_sequences(model.config)
    full = model(ids, use_cache=False).logits
    cache = DynamicCache(config=model.config)
    steps = torch.cat([model(ids[:, t : t + 1], cache=cache).logits for t in range(ids.shape[1] - 1)], dim=1)
    torch.testing.assert_close(steps, full[:, :-1], atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("cache_class", ["dynamic", "static"])
def test_k_token_pass_on_cache_equals_k_single_steps(model, cache_class):
    ids = random_sequences(model.config)
    make = {
        "dynamic": lambda: DynamicCache(config=model.config),
        "static": lambda: StaticCache(config=model.config, max_cache_len=model.config.max_position_embeddings),
    }[cache_class]
    prefix, k = 5, 4
    cache_a, cache_b = make(), make()
    model(ids[:, :prefix], cache=cache_a)
    multi = model(ids[:, prefix : prefix + k], cache=cache_a).logits  # one verify-style pass
    model(ids[:, :prefix], cache=cache_b)
    single = torch.cat([model(ids[:, t : t + 1], cache=cache_b).logits for t in range(prefix, prefix + k)], dim=1)
    torch.testing.assert_close(multi, single, atol=1e-5, rtol=1e-5)
    full = model(ids[:, : prefix + k], use_cache=False).logits[:, prefix:]
    torch.testing.assert_close(multi, full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("cache_class", ["dynamic", "static"])
def test_crop_then_continue_equals_never_going_further(model, cache_class):
    ids = random_sequences(model.config)
    other = random_sequences(model.config, seed=1)
    if cache_class == "dynamic":
        cache = DynamicCache(config=model.config)
    else:
        cache = StaticCache(config=model.config, max_cache_len=model.config.max_position_embeddings)
    model(ids[:, :6], cache=cache)
    model(other[:, 6:10], cache=cache)  # a rejected draft of 4 tokens
    cache.crop(-4)
    assert int(cache.get_seq_length()) == 6
    continued = model(ids[:, 6:9], cache=cache).logits
    reference = model(ids[:, :9], use_cache=False).logits[:, 6:]
    torch.testing.assert_close(continued, reference, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_mask_hides_padded_keys(model):
    ids = random_sequences(model.config, length=6)
    mask = torch.ones_like(ids)
    mask[:, 3] = 0
    masked = model(ids, attention_mask=mask, use_cache=False).logits
    edited = ids.clone()
    edited[:, 3] = (edited[:, 3] + 1) % model.config.codebook_size
    torch.testing.assert_close(model(edited, attention_mask=mask, use_cache=False).logits[:, 4:], masked[:, 4:])
    assert not torch.allclose(model(edited, use_cache=False).logits[:, 4:], model(ids, use_cache=False).logits[:, 4:])


@torch.no_grad()
def test_logits_to_keep_and_loss(model):
    ids = random_sequences(model.config)
    out = model(ids, labels=ids, use_cache=False)
    assert out.logits.shape == (2, ids.shape[1], model.config.codebook_size)
    torch.testing.assert_close(model(ids, logits_to_keep=3, use_cache=False).logits, out.logits[:, -3:])
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)
    half = ids.clone()
    half[0, 1:] = -100  # the first row holds no target: the mean is over the second row's codes alone
    expected = torch.nn.functional.cross_entropy(out.logits[1, :-1], ids[1, 1:])
    torch.testing.assert_close(model(ids, labels=half, use_cache=False).loss, expected)


def test_labels_without_a_code_target_give_a_zero_loss_not_nan(model):
    """A prompt alone, or labels all -100: the mean over no target was NaN and poisoned whatever it was added to."""
    ids = random_sequences(model.config)
    prompt = ids[:, :1]
    for inputs, labels in ((prompt, prompt), (ids, torch.full_like(ids, -100))):
        loss = model(inputs, labels=labels, use_cache=False).loss
        assert loss.item() == 0.0, (labels.tolist(), loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()


# -- generation ----------------------------------------------------------------------------------------------

def test_greedy_generate_equals_reference_with_and_without_cache(model):
    prompt = model.class_prompt([0, 1, 2])
    n = model.config.num_image_tokens
    reference = reference_greedy(model, prompt, n)
    cached = model.generate(prompt, do_sample=False)
    uncached = model.generate(prompt, do_sample=False, use_cache=False)
    assert cached.shape == (3, 1 + n)
    assert torch.equal(cached, reference) and torch.equal(uncached, reference)
    assert torch.equal(cached[:, 0], prompt[:, 0])
    # the class token conditions the image: three classes, three different greedy images
    assert len({tuple(row.tolist()) for row in cached[:, 1:]}) == 3


def test_sampling_stays_in_codebook_and_respects_length(model):
    torch.manual_seed(0)
    out = model.generate(model.class_prompt([2, 2]), do_sample=True, top_k=None, max_new_tokens=5)
    assert out.shape == (2, 6)
    assert (out[:, 1:] < model.config.codebook_size).all()


def test_classifier_free_guidance_matches_transformers_guidance(model):
    prompt = model.class_prompt([0, 2])
    ours = model.generate(prompt, do_sample=False, cfg_scale=3.0)
    hf = model.generate(
        prompt, do_sample=False, guidance_scale=3.0, negative_prompt_ids=model.class_prompt(None, batch_size=2)
    )
    assert torch.equal(ours, hf)
    assert torch.equal(model.generate(prompt, do_sample=False, cfg_scale=1.0), model.generate(prompt, do_sample=False))
    with torch.no_grad():
        plain = model(prompt).logits.log_softmax(-1)
        guided = model(prompt, cfg_scale=3.0).logits
    assert not torch.allclose(plain, guided)


def test_cfg_cache_mismatch_is_reported(model):
    prompt = model.class_prompt([0])
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(prompt, cache=cache)
        with pytest.raises(ValueError, match="cfg_scale"):
            model(torch.tensor([[3]]), cache=cache, cfg_scale=2.0)


def test_unconditional_model():
    model = tiny_model(num_classes=0)
    prompt = model.class_prompt(None, batch_size=2)
    assert (prompt == model.config.codebook_size).all()
    out = model.generate(prompt, do_sample=True, top_k=None)
    assert out.shape == (2, 1 + model.config.num_image_tokens)
    with pytest.raises(ValueError, match="labels"):
        model.class_prompt([0])
    with pytest.raises(ValueError, match="cfg_scale"):
        model.generate(prompt, cfg_scale=2.0)


# -- bad input -----------------------------------------------------------------------------------------------

def test_bad_generation_input_names_the_argument(model):
    with pytest.raises(ValueError, match="labels"):
        model.class_prompt([0, 3])
    with pytest.raises(ValueError, match="labels"):
        model.class_prompt([-1])
    for not_integers in ([1.5], ["1"], [True], torch.tensor([0.0])):  # refused, not truncated or misread
        with pytest.raises(ValueError, match="labels.*integer"):
            model.class_prompt(not_integers)
    assert torch.equal(model.class_prompt(torch.tensor([1], dtype=torch.int32)), model.class_prompt([1]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(model.class_prompt([0]), max_new_tokens=model.config.num_image_tokens + 1)
    with pytest.raises(ValueError, match="max_length"):  # an IndexError in the position embedding before
        model.generate(model.class_prompt([0]), max_length=model.config.max_position_embeddings + 1)
    with pytest.raises(ValueError, match="`attention_mask` has a row of zeros"):  # changed the output silently
        model.generate(model.class_prompt([0, 1]), attention_mask=torch.tensor([[1], [0]]), do_sample=False)
    for name, value in (("min_new_tokens", model.config.num_image_tokens + 1),  # silently dropped before
                        ("min_length", model.config.max_position_embeddings + 1)):
        with pytest.raises(ValueError, match=f"`{name}`={value} does not fit"):
            model.generate(model.class_prompt([0]), **{name: value})
    with pytest.raises(ValueError, match="input_ids"):
        model.generate(torch.tensor([[5]]), max_new_tokens=3)  # a code, not a class token
    with pytest.raises(ValueError, match="inputs"):
        model.generate(max_new_tokens=3)


# -- save / load ---------------------------------------------------------------------------------------------

def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    ids = random_sequences(model.config)
    for loader in (VQGPTForCausalLM, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, VQGPTForCausalLM)
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    trunk = AutoModel.from_pretrained(tmp_path).eval()  # registered: the hidden states without the head
    with torch.no_grad():
        torch.testing.assert_close(trunk(ids).last_hidden_state, model.transformer(ids).last_hidden_state, atol=0, rtol=0)
    loaded_config = AutoConfig.from_pretrained(tmp_path).to_diff_dict()
    assert {k: v for k, v in loaded_config.items() if k != "_name_or_path"} == model.config.to_diff_dict()




def test_from_pretrained_overrides_fields_and_names_a_mistyped_one(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert VQGPTForCausalLM.from_pretrained(tmp_path, dropout=0.3).config.dropout == 0.3  # a field: overridden
    # not a field and not a loading argument: transformers passed it on to __init__ -> a bare TypeError
    for loader in (VQGPTForCausalLM, AutoModelForCausalLM):
        with pytest.raises(ValueError, match="`num_hidden_layer` is neither an argument of `from_pretrained` nor a "
                                             "VQGPTConfig field: use `num_hidden_layers`"):
            loader.from_pretrained(tmp_path, num_hidden_layer=1)
    with pytest.raises(ValueError, match=r"`colour` is neither .*field\. The fields.*'num_hidden_layers'"):
        VQGPTForCausalLM.from_pretrained(tmp_path, colour="red")
def test_remote_code_loads_without_hf_specdec(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "modeling_vqgpt.py").exists() and (tmp_path / "ckpt" / "generation_vqgpt.py").exists()
    ids = random_sequences(model.config)
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        torch.save(model(ids).logits, tmp_path / "expected.pt")
    script = HIDE_HF_SPECDEC + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM
        try:
            import hf_specdec  # noqa: F401
            raise SystemExit("hf_specdec should not be importable here")
        except ImportError:
            pass
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        ids = torch.load({str(tmp_path / "ids.pt")!r})
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, torch.load({str(tmp_path / "expected.pt")!r}))
        out = model.generate(model.class_prompt([1]), do_sample=False)
        assert out.shape[1] == 1 + model.config.grid_h * model.config.grid_w
        from transformers import AutoModel
        trunk = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert type(trunk).__name__ == "VQGPTModel" and type(trunk).__module__.startswith("transformers_modules")
        with torch.no_grad():
            torch.testing.assert_close(trunk(ids).last_hidden_state, model.transformer(ids).last_hidden_state)
        print("remote-ok")
        """
    )
    env = python_env(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = run_python(["-c", script], cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote-ok" in result.stdout


def test_null_prompts_are_not_treated_as_padding():
    """generate() infers padding from pad_token_id; the null-class prompt must stay visible to every position."""
    model = tiny_model(num_classes=0)
    prompt = model.class_prompt(None, batch_size=2)
    generated = model.generate(prompt, do_sample=False)
    assert torch.equal(generated, reference_greedy(model, prompt, model.config.num_image_tokens))
    model.generation_config.pad_token_id = model.config.null_token_id  # as in older saved generation configs
    assert torch.equal(model.generate(prompt, do_sample=False), generated)


def test_shipped_remote_code_matches_the_package():
    """The checkpoints carry copies of the modeling files for `trust_remote_code` (save_pretrained writes them); they
    must be the package's current files, or Hub users without hf_specdec would run stale code."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    package = root / "hf_specdec" / "models"
    files = ("configuration_vqgpt.py", "generation_vqgpt.py", "modeling_vqgpt.py")  # the module and its imports
    folders = sorted(p.parent for p in (root / "checkpoints").rglob("modeling_vqgpt.py"))
    assert len(folders) >= 6  # teacher, five drafts
    missing = [str(f.relative_to(root) / n) for f in folders for n in files if not (f / n).is_file()]
    assert not missing, f"copy into the checkpoints (remote code fails to import without them): {missing}"
    copies = sorted((root / "checkpoints").rglob("*_vqgpt.py"))
    stale = [str(c.relative_to(root)) for c in copies if c.read_text() != (package / c.name).read_text()]
    assert not stale, f"re-copy hf_specdec/models/{{modeling,configuration,generation}}_vqgpt.py into: {stale}"


def test_labels_of_another_shape_and_numpy_prompts_are_named(model):
    ids = random_sequences(model.config)
    for labels, got in ((ids[:, 0], "torch.int64 tensor of shape"), (ids.float(), "torch.float32 tensor"),
                        (ids.tolist(), "a list")):  # were an IndexError, torch's target-dtype error, an AttributeError
        with pytest.raises(ValueError, match=f"`labels` must be integer token ids of the same shape as `input_ids`.*{got}"):
            model(ids, labels=labels)
    # the dtype of an array (int64) read as if it were the problem
    with pytest.raises(ValueError, match="`input_ids` must be a torch.long .*got a numpy.ndarray \\(torch.from_numpy"):
        model.generate(ids[:, :1].numpy(), do_sample=False)


def test_generate_samples_the_whole_codebook_when_top_k_is_not_given():
    """transformers 5 fills an unset `top_k` with 50: `generate(do_sample=True)` drew from the 50 likeliest of 128
    codes, not from the model's distribution (the photographs' teacher has 256)."""
    model = tiny_model(0, codebook_size=128).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every code equally likely
    torch.manual_seed(0)
    first = model.generate(model.class_prompt([0] * 1024), max_new_tokens=1, do_sample=True)[:, 1]
    assert len(first.unique()) > 100  # 50 with the truncation
    peaked = tiny_model(0, codebook_size=128).eval()  # distinct logits: a top-k asked for is still applied
    assert len(peaked.generate(peaked.class_prompt([0] * 256), max_new_tokens=1, do_sample=True, top_k=5)[:, 1].unique()) <= 5
