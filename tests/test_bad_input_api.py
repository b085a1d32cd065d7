"""Bad input to the library's entry points, as a user tries it: a `ValueError` naming the argument, before any work.
(The scripts' bad input: tests/test_cli.py.)"""

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from hf_specdec import VQTokenizer
from hf_specdec.hub import load_pretrained
from hf_specdec.models import VQGPTForCausalLM, make_feature_draft
from hf_specdec.speculative import EarlyExitDraft, SpeculativeDecoder, plain_sample, speculative_generate, speculative_sample
from hf_specdec.speculative.sampling import SamplingConfig, latent_neighbours
from tests.utils import tiny_model, tiny_vq


@pytest.fixture(scope="module")
def pair():
    return tiny_model(0), tiny_model(1, num_hidden_layers=1)


def test_generate_refuses_what_transformers_would_misread(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1])
    bad = [
        (dict(guidance_scale=3.0), ["guidance_scale", "negative_prompt_ids", "cfg_scale"]),  # transformers' CFG would silently cancel out
        (dict(cfg_scale=float("nan")), ["cfg_scale", "finite"]),
        (dict(cfg_scale=float("inf"), do_sample=False), ["cfg_scale", "finite"]),
        (dict(cfg_scale="2"), ["cfg_scale"]),
        (dict(num_beams=2, cfg_scale=2.0, max_new_tokens=4), ["cfg_scale", "num_beams"]),
        (dict(max_new_tokens=2.5), ["max_new_tokens", "integer"]),
        (dict(max_new_tokens="3"), ["max_new_tokens", "integer"]),
        (dict(assistant_model=EarlyExitDraft(teacher, 1)), ["assistant_model", "EarlyExitDraft", "speculative_sample"]),
        (dict(assistant_model="checkpoints/digits/draft-1L"), ["assistant_model", "from_pretrained"]),
        (dict(assistant_model=tiny_model(2, codebook_size=24)), ["assistant_model", "codebook_size"]),
        (dict(prompt_lookup_num_tokens=3), ["prompt_lookup_num_tokens", "4x4", "assistant_model=draft"]),  # IndexError
        (dict(generation_config=GenerationConfig(prompt_lookup_num_tokens=2)), ["prompt_lookup_num_tokens"]),
        (dict(assistant_early_exit=1), ["assistant_early_exit", "EarlyExitDraft"]),  # IndexError
        (dict(eos_token_id=3, do_sample=False), ["eos_token_id", "whole 4x4 grid"]),  # filled the image with code 3
        (dict(generation_config=GenerationConfig(eos_token_id=[3, 4])), ["eos_token_id"]),
    ]
    for kwargs, words in bad:
        with pytest.raises(ValueError) as error:
            teacher.generate(prompt[:1] if "assistant_model" in kwargs else prompt, **kwargs)
        assert all(w in str(error.value) for w in words), (kwargs, str(error.value))
    teacher.generation_config.eos_token_id = 3  # the model's own generation config is checked too
    with pytest.raises(ValueError, match="eos_token_id"):
        teacher.generate(prompt)
    teacher.generation_config.eos_token_id = None
    for inputs in (prompt.float(), prompt[:0], [[teacher.config.codebook_size]]):
        with pytest.raises(ValueError, match="input_ids"):
            teacher.generate(inputs)
    # the checks leave good calls alone: greedy with guidance and HF assisted generation still run
    guided = teacher.generate(prompt, do_sample=False, cfg_scale=2.0)
    assert guided.shape == (2, teacher.config.max_position_embeddings)
    assert teacher.generate(prompt[:1], assistant_model=draft, do_sample=False).shape[1] == guided.shape[1]


def test_a_teacher_in_training_mode_with_dropout_is_refused_a_draft_is_not(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([2])
    dropping = copy.deepcopy(teacher)
    dropping.config.dropout = 0.1
    for module in dropping.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    dropping.train()
    with pytest.raises(ValueError, match=r"`teacher` is in training mode .*\.eval\(\)"):
        speculative_sample(dropping, draft, prompt, do_sample=False)
    with pytest.raises(ValueError, match=r"`model` is in training mode"):
        plain_sample(dropping, prompt)
    with pytest.warns(UserWarning, match="in training mode with dropout 0.1: its samples do not follow"):
        dropping.generate(prompt, do_sample=True)  # transformers' generate: said, not refused (a draft may mean it)
    assert torch.equal(speculative_sample(dropping.eval(), draft, prompt, do_sample=False).sequences,
                       teacher.generate(prompt, do_sample=False))
    # an early-exit draft of a teacher in eval mode samples alone (it started in training mode, a new Module, and
    # was refused: the benchmark's self-speculative "draft alone" run failed); of a teacher in training, refused
    early = EarlyExitDraft(dropping.eval(), 1)
    assert not early.training and plain_sample(early, prompt).shape == (1, 1 + teacher.config.num_image_tokens)
    dropping.train()
    with pytest.raises(ValueError, match=r"`model` is in training mode"):
        plain_sample(early, prompt)
    train_draft = copy.deepcopy(draft).train()  # the draft's randomness never reaches the output: allowed
    assert torch.equal(speculative_sample(teacher, train_draft, prompt, do_sample=False).sequences,
                       teacher.generate(prompt, do_sample=False))


def test_models_in_the_wrong_role_are_refused(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0])
    feature = make_feature_draft(teacher, num_layers=1)
    with pytest.raises(ValueError, match="`model` is a feature-conditioned draft"):
        plain_sample(feature, prompt)
    with pytest.raises(ValueError, match="`teacher` is a feature-conditioned draft"):
        speculative_sample(feature, draft, prompt)
    with pytest.raises(ValueError, match="`draft` must be a draft model.*plain_sample"):
        speculative_sample(teacher, None, prompt)
    for num_layers in (1.5, True, "1"):
        with pytest.raises(ValueError, match="`num_layers` must be an integer"):
            EarlyExitDraft(teacher, num_layers)
    with pytest.raises(ValueError, match="`teacher` must be the full teacher"):
        EarlyExitDraft(feature, 1)
    with pytest.raises(ValueError, match="`teacher` must be a VQGPT model"):
        EarlyExitDraft("checkpoints/digits/teacher", 1)
    for bad in ("checkpoints/digits/teacher", None):
        with pytest.raises(ValueError, match="`teacher` must be a VQGPT model"):
            SpeculativeDecoder(bad, draft, 3, 2, SamplingConfig())


def test_half_moved_models_and_switches_that_are_not_bools(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0])
    mixed = copy.deepcopy(teacher)
    mixed.lm_head.to(torch.float64)
    with pytest.raises(ValueError, match="`teacher` has parameters on several devices or dtypes"):
        speculative_sample(mixed, draft, prompt)
    with pytest.raises(ValueError, match="`adaptive_gamma` must be True or False"):
        speculative_sample(teacher, draft, prompt, adaptive_gamma="no")
    with pytest.raises(ValueError, match="`cost_ratio` must be a finite number"):
        speculative_sample(teacher, draft, prompt, adaptive_gamma=True, cost_ratio=float("inf"))
    with pytest.raises(ValueError, match="return_dict_in_generate"):
        teacher.generate(prompt, custom_generate=speculative_generate, draft_model=draft, return_dict_in_generate=True)
    # numpy scalars are numbers: accepted, and the same call as with Python's
    expected = speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False).sequences
    got = speculative_sample(teacher, draft, prompt, gamma=np.int64(3), top_k=np.int64(5), do_sample=False).sequences
    assert torch.equal(got, expected)


def test_relaxed_neighbour_tables_are_checked_before_decoding(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0])
    K = teacher.config.codebook_size
    for table in (torch.zeros(K, 2), torch.full((K, 2), K), torch.full((K, 2), -1), torch.zeros(K, 0, dtype=torch.long)):
        with pytest.raises(ValueError, match="`relaxed_neighbours` must hold code indices"):
            speculative_sample(teacher, draft, prompt, relaxed_neighbours=table)
    codebook = torch.randn(K, 4)
    for k in (2.0, True, 0, K + 1):
        with pytest.raises(ValueError, match="`k` must be an integer"):
            latent_neighbours(codebook, k)
    with pytest.raises(ValueError, match="`codebook` must be a floating-point"):
        latent_neighbours(torch.randn(K), 2)
    with pytest.raises(ValueError, match="`max_distance`"):
        latent_neighbours(codebook, 2, max_distance=float("nan"))
    table = latent_neighbours(codebook, 2)
    assert torch.equal(speculative_sample(teacher, draft, prompt, relaxed_neighbours=table, do_sample=False).sequences,
                       teacher.generate(prompt, do_sample=False))  # greedy ignores the relaxation


def test_folders_of_another_model_or_config_are_refused(tmp_path):
    tiny_vq().save_pretrained(tmp_path / "vq")
    tiny_model(0).save_pretrained(tmp_path / "teacher")
    with open(tmp_path / "vq" / "config.json") as f:
        config = json.load(f)
    config["_class_name"] = "DigitsClassifier"
    with open(tmp_path / "vq" / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="holds a DigitsClassifier, not a VQTokenizer"):
        VQTokenizer.from_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="`tokenizer` .*DigitsClassifier"):
        load_pretrained(VQTokenizer, str(tmp_path / "vq"), "tokenizer")
    with pytest.raises(ValueError, match=r"holds a transformers `vqgpt` model \(VQGPTForCausalLM\), not a VQTokenizer"):
        VQTokenizer.from_pretrained(tmp_path / "teacher")  # and the other way round
    with pytest.raises(ValueError, match="holds a diffusers `DigitsClassifier`, not a `vqgpt` model: load it with its "
                                         "own class \\(`DigitsClassifier.from_pretrained`\\)"):
        VQGPTForCausalLM.from_pretrained(tmp_path / "vq")
    shutil.copytree(tmp_path / "teacher", tmp_path / "edited")
    with open(tmp_path / "edited" / "config.json") as f:
        config = json.load(f)
    config["hidden_size"] *= 2
    with open(tmp_path / "edited" / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="`teacher` .*weights whose shapes do not fit its config.json"):
        load_pretrained(VQGPTForCausalLM, str(tmp_path / "edited"), "teacher")
    assert load_pretrained(VQGPTForCausalLM, str(tmp_path / "teacher"), "teacher").config.hidden_size > 0


def test_a_file_or_a_missing_folder_given_as_a_model_is_named_so(tmp_path):
    tiny_model(0).save_pretrained(tmp_path / "teacher")
    tiny_vq().save_pretrained(tmp_path / "vq")
    for cls, folder in ((VQGPTForCausalLM, "teacher"), (VQTokenizer, "vq")):
        # transformers unpickled the config.json as weights (UnpicklingError); diffusers read it as a shard index
        with pytest.raises(ValueError, match=f"is a file: give `{cls.__name__}.from_pretrained` the model's folder"):
            cls.from_pretrained(tmp_path / folder / "config.json")
        with pytest.raises(FileNotFoundError, match="There is no folder .*not a Hub repo id"):
            cls.from_pretrained(tmp_path / "missing")  # was "Repo id must be in the form ..." / "Checkout your internet"
        with pytest.raises(ValueError, match="`tokenizer`: .*is a file"):
            load_pretrained(cls, str(tmp_path / folder / "config.json"), "tokenizer")
        (tmp_path / f"{folder}-weights-only").mkdir()  # built the default size, then "mismatched sizes"
        for weights in (tmp_path / folder).glob("*.safetensors"):
            shutil.copy(weights, tmp_path / f"{folder}-weights-only")
        with pytest.raises(ValueError, match="holds no config.json: it is not a saved model folder"):
            cls.from_pretrained(tmp_path / f"{folder}-weights-only")
        with pytest.raises(FileNotFoundError, match="has no sub-folder 'nope'"):  # "no file named ... in <parent>"
            cls.from_pretrained(tmp_path, subfolder="nope")
        assert type(cls.from_pretrained(tmp_path, subfolder=folder)) is cls
        with pytest.raises(ValueError, match="`device` must be cpu, cuda, cuda:<index> or mps, got 'gpu'"):
            load_pretrained(cls, str(tmp_path / folder), "tokenizer", device="gpu")  # torch's error, after loading


def test_the_tokenizer_refuses_keywords_diffusers_would_ignore(tmp_path):
    tiny_vq().save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="`num_vq_embedding` is neither .* VQTokenizer config field: use `num_vq_embeddings`"):
        VQTokenizer.from_pretrained(tmp_path / "vq", num_vq_embedding=3)
    with pytest.raises(ValueError, match="`torch_dtype` must be a torch.dtype or its name .* got 'float8'"):
        VQTokenizer.from_pretrained(tmp_path / "vq", torch_dtype="float8")
    for name in ("torch_dtype", "dtype"):  # diffusers loaded float32 for the string, with a warning naming float32
        assert VQTokenizer.from_pretrained(tmp_path / "vq", **{name: "bfloat16"}).dtype == torch.bfloat16
    assert VQTokenizer.from_pretrained(tmp_path / "vq", local_files_only=True, commitment_beta=0.5).config.commitment_beta == 0.5


def test_class_prompt_checks_its_batch_size(pair):
    teacher, _ = pair
    for batch_size in (1.5, True, 0, "2"):
        with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
            teacher.class_prompt(None, batch_size=batch_size)
    with pytest.raises(ValueError, match="`batch_size` 4 disagrees with the 1 `labels`"):
        teacher.class_prompt([1], batch_size=4)
    assert teacher.class_prompt([1, 2], batch_size=2).shape == (2, 1)
    assert teacher.class_prompt(None, batch_size=np.int64(3)).shape == (3, 1)
