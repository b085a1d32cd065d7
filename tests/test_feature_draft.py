"""The feature-conditioned draft (EAGLE-3 style): a model that loads only with its teacher, reads the verify pass's
features inside the engine exactly as a fresh teacher-forced pass computes them, keeps the sampler lossless and
greedy equal to the teacher on every engine path, and trains to a higher acceptance."""

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from transformers import DynamicCache

import hf_specdec.speculative.sampling as sampling
from hf_specdec.distill import DistillArguments, expected_acceptance, sample_sequences
from hf_specdec.distill.distill import distillation_loss, make_draft
from hf_specdec.models import VQGPTFeatureDraft, VQGPTFeatureDraftConfig, make_feature_draft
from hf_specdec.pipeline import class_prompts
from hf_specdec.speculative import SamplingConfig, SpeculativeDecoder, SpeculativeOutput, speculative_sample
from tests.conftest import HostSyncCounter, tiny_model
from tests.test_speculative import SMALL, empirical_distribution, exact_distribution, small_pair, tv_bound
from tests.test_speculative import wrong_residual_accept


@pytest.fixture(scope="module")
def pair():
    teacher = tiny_model(0, num_hidden_layers=4)
    draft = make_feature_draft(teacher, 1, init=False).eval()
    with torch.no_grad():
        draft.fc.weight.mul_(4)  # features weigh as much as tokens in the random draft
    return teacher, draft


def run(decoder, prompt, new_tokens, seed=0):
    record = decoder.generate(prompt, new_tokens, torch.Generator().manual_seed(seed))
    return SpeculativeOutput.from_record(record, prompt.shape[1])


# -- the model -------------------------------------------------------------------------------------------------

def test_loads_only_with_its_teacher(pair, tmp_path):
    teacher, draft = pair
    draft.save_pretrained(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "model.safetensors"]  # only its own weights; no remote code, no teacher
    with pytest.raises(ValueError, match="`teacher` is required"):
        VQGPTFeatureDraft.from_pretrained(tmp_path)
    loaded = VQGPTFeatureDraft.from_pretrained(tmp_path, teacher=teacher)
    ids = torch.cat([teacher.class_prompt([0, 1]), torch.randint(0, 16, (2, 16))], dim=1)
    torch.testing.assert_close(loaded.unrolled_logits(ids, 2)[1], draft.unrolled_logits(ids, 2)[1])
    other = tiny_model(0, num_hidden_layers=3)
    with pytest.raises(ValueError, match="3 layers"):
        VQGPTFeatureDraft.from_pretrained(tmp_path, teacher=other)
    with pytest.raises(ValueError, match="`teacher` must be .*from_pretrained"):  # a path: AttributeError before
        VQGPTFeatureDraft.from_pretrained(tmp_path, teacher=str(tmp_path))
    with pytest.raises(ValueError, match="`teacher` must be"):
        loaded.attach_teacher(None)
    with pytest.raises(ValueError, match="vqgpt_feature_draft"):  # loaded as a randomly initialised VQGPT before
        type(teacher).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot generate alone"):
        loaded.generate(teacher.class_prompt([0]))
    with pytest.raises(ValueError, match="no teacher"):
        VQGPTFeatureDraft(draft.config)(ids)
    with pytest.raises(ValueError, match="feature_layers"):
        VQGPTFeatureDraftConfig(teacher_num_hidden_layers=4, feature_layers=[5])


def test_load_draft_reads_the_kind_from_the_config(pair, tmp_path):
    from hf_specdec import VQGPTForCausalLM
    from hf_specdec.hub import load_draft

    teacher, draft = pair
    draft.save_pretrained(tmp_path / "feature")
    teacher.save_pretrained(tmp_path / "plain")
    loaded = load_draft(str(tmp_path / "feature"), "drafts", teacher)
    assert isinstance(loaded, VQGPTFeatureDraft) and loaded.teacher is teacher and not loaded.training
    assert type(load_draft(str(tmp_path / "plain"), "drafts", teacher)) is VQGPTForCausalLM
    with pytest.raises(ValueError, match="`drafts`: There is no folder .*missing"):
        load_draft(str(tmp_path / "missing"), "drafts", teacher)
    with pytest.raises(ValueError, match="`drafts` .* holds no VQGPTFeatureDraft .*3 layers"):  # and says why
        load_draft(str(tmp_path / "feature"), "drafts", tiny_model(0, num_hidden_layers=3))


def test_assisted_generation_refuses_it_with_a_clear_error(pair):
    teacher, draft = pair
    with pytest.raises(ValueError, match="token ids only"):
        teacher.generate(teacher.class_prompt([0]), assistant_model=draft, do_sample=True)


def test_the_engine_refuses_a_draft_of_another_teacher(pair):
    teacher, draft = pair
    twin = tiny_model(0, num_hidden_layers=4)  # same shape and weights, another object: its features are not read
    with pytest.raises(ValueError, match="another teacher"):
        SpeculativeDecoder(twin, draft, 3, 1)


def test_initialised_draft_starts_as_the_independent_one():
    """`fc` passes the token embedding through: before training, features are ignored and the draft computes what
    the teacher-initialised 1-layer VQGPT computes."""
    from hf_specdec.distill import make_student

    teacher = tiny_model(0, num_hidden_layers=4)
    feature, independent = make_feature_draft(teacher, 1), make_student(teacher, 1)
    ids = torch.cat([teacher.class_prompt([0, 2]), torch.randint(0, 16, (2, 16))], dim=1)
    torch.testing.assert_close(feature.unrolled_logits(ids)[0], independent(ids, use_cache=False).logits)
    wide = make_feature_draft(teacher, 1, intermediate_size=4 * teacher.config.intermediate_size)
    torch.testing.assert_close(wide.unrolled_logits(ids)[0], independent(ids, use_cache=False).logits)


def test_a_block_tiled_k_times_computes_k_copies():
    """`copy_from` into a block `k` times as wide (`k` times the heads): on `k` copies of an input it returns `k`
    copies of the source block's output (Net2WiderNet)."""
    teacher = tiny_model(0, num_hidden_layers=2)
    source = teacher.transformer.h[1].eval()
    config = teacher.config.student_config(1)
    C = config.hidden_size
    for k in (2, 3):
        wide_config = type(config)(**{**config.own_fields(), "hidden_size": k * C,
                                      "num_attention_heads": k * config.num_attention_heads,
                                      "intermediate_size": k * config.intermediate_size})
        wide = type(source)(wide_config, 1).eval().copy_from(source)
        x = torch.randn(2, 7, C)
        positions = torch.arange(7)[None]
        with torch.no_grad():
            torch.testing.assert_close(wide(x.repeat(1, 1, k), None, positions), source(x, None, positions).repeat(1, 1, k),
                                       atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        odd = type(config)(**{**config.own_fields(), "hidden_size": C + C // 2,
                              "num_attention_heads": 3 * config.num_attention_heads // 2})
        type(source)(odd, 1).copy_from(source)


def test_a_wider_draft_starts_as_the_independent_one_and_keeps_the_engine_exact(tmp_path):
    """A draft twice its teacher's width (`hidden_size`): it starts (up to the noise that tells its copies apart)
    as the teacher-initialised independent draft, saves and loads its own `widen` / `narrow`, refuses a width that
    is not a multiple, and in the engine stays greedy-equal to the teacher, guided or not."""
    from hf_specdec.distill import make_student

    teacher = tiny_model(0, num_hidden_layers=4)
    C = teacher.config.hidden_size
    torch.manual_seed(0)
    wide = make_feature_draft(teacher, 1, hidden_size=2 * C).eval()
    assert (wide.config.hidden_size, wide.config.teacher_hidden_size) == (2 * C, C)
    ids = torch.cat([teacher.class_prompt([0, 2]), torch.randint(0, 16, (2, 16))], dim=1)
    qkv = wide.h[0].attn.c_attn.weight
    assert not torch.equal(qkv[:C], qkv[C : 2 * C])  # the two copies of the first heads differ: noise
    with torch.no_grad():
        independent = make_student(teacher, 1)(ids, use_cache=False).logits
        assert not torch.equal(wide.unrolled_logits(ids)[0], independent)
        wide.h[0].copy_from(teacher.transformer.h[0])  # the same draft without the noise
        torch.testing.assert_close(wide.unrolled_logits(ids)[0], independent, atol=1e-4, rtol=1e-4)
        wide.fc.weight.mul_(4)  # and now the features matter
    wide.save_pretrained(tmp_path)
    loaded = VQGPTFeatureDraft.from_pretrained(tmp_path, teacher=teacher)
    torch.testing.assert_close(loaded.unrolled_logits(ids, 2)[1], wide.unrolled_logits(ids, 2)[1])
    with pytest.raises(ValueError, match="`hidden_size` must be a multiple of the teacher's hidden_size"):
        make_feature_draft(teacher, 1, hidden_size=C + 8)  # the library's argument, not the script's option
    with pytest.raises(ValueError, match="`intermediate_size` must be >= .*2 times as wide"):
        make_feature_draft(teacher, 1, hidden_size=2 * C, intermediate_size=teacher.config.intermediate_size)
    with pytest.raises(ValueError, match="hidden_size=.*made for"):
        VQGPTFeatureDraft.from_pretrained(tmp_path, teacher=tiny_model(0, num_hidden_layers=4, hidden_size=2 * C))
    prompt = teacher.class_prompt([0, 1, 2])
    for cfg_scale in (None, 2.0):
        expected = teacher.generate(prompt, do_sample=False, cfg_scale=cfg_scale)
        decoder = SpeculativeDecoder(teacher, loaded, 3, 2, SamplingConfig(do_sample=False, cfg_scale=cfg_scale),
                                     mode="eager")
        assert torch.equal(run(decoder, prompt, 16).sequences, expected)
    with pytest.raises(ValueError, match="feature drafts only"):
        DistillArguments(student_layers=1, draft_hidden_size=2 * C)
    I = teacher.config.intermediate_size
    for width, least in ((None, I), (2 * C, 2 * I)):  # named as the option the script's user gave
        args = DistillArguments(student_layers=1, loss="tv", feature_draft=True, draft_hidden_size=width,
                                draft_intermediate_size=least - 1)
        with pytest.raises(ValueError, match=f"`draft_intermediate_size` must be >= {least} "):
            make_draft(args, teacher)
    args = DistillArguments(student_layers=1, loss="tv", feature_draft=True, draft_hidden_size=C + C // 2,
                            draft_intermediate_size=I)  # the width is what is wrong, and what is named
    with pytest.raises(ValueError, match="`draft_hidden_size` must be a multiple"):
        make_draft(args, teacher)


# -- inside the engine ------------------------------------------------------------------------------------------

SETTINGS = {
    "greedy": SamplingConfig(do_sample=False),
    "sample": SamplingConfig(),
    "cfg-chains": SamplingConfig(cfg_scale=2.0, num_drafts=2),
}


@pytest.mark.parametrize("gamma", [1, 3, 16])
@pytest.mark.parametrize("cfg_scale", [None, 2.0])
def test_greedy_equals_the_teacher(pair, gamma, cfg_scale):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2])
    expected = teacher.generate(prompt, do_sample=False, cfg_scale=cfg_scale)
    decoder = SpeculativeDecoder(teacher, draft, gamma, 3, SamplingConfig(do_sample=False, cfg_scale=cfg_scale))
    assert torch.equal(run(decoder, prompt, 16).sequences, expected)
    longer = torch.cat([prompt, expected[:, 1:6]], dim=1)  # a prompt of codes: prefilled with features
    assert torch.equal(run(decoder.__class__(teacher, draft, gamma, 3, decoder.sampling), longer, 11).sequences,
                       expected)
    # more prompts than rows: a refilled row reads its new image's features, never the last image's
    streamed = torch.cat([prompt, teacher.class_prompt([2, 1, 0, 1])])
    out = run(SpeculativeDecoder(teacher, draft, gamma, 2, decoder.sampling), streamed, 16)
    assert torch.equal(out.sequences, teacher.generate(streamed, do_sample=False, cfg_scale=cfg_scale))
    # ... and prompts of codes streamed: a refilled row's prompt is prefilled with its own features
    codes = torch.randint(0, 16, (len(streamed), 4), generator=torch.Generator().manual_seed(1))
    streamed_codes = torch.cat([streamed, codes], dim=1)
    out = run(SpeculativeDecoder(teacher, draft, gamma, 2, decoder.sampling), streamed_codes, 12)
    assert torch.equal(out.sequences, teacher.generate(streamed_codes, do_sample=False, cfg_scale=cfg_scale))


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_the_draft_reads_what_a_fresh_teacher_forced_pass_computes(pair, setting):
    """After a call, the kept features of every committed slot equal the teacher's fused hidden states on the
    committed tokens, and the draft's cache below its last catch-up holds the keys a teacher-forced draft pass
    computes: the verify pass handed over the right features, and the catch-up fed them to the right slots."""
    teacher, draft = pair
    decoder = SpeculativeDecoder(teacher, draft, 3, 2, SETTINGS[setting], mode="eager")
    record = decoder.generate(teacher.class_prompt([0, 2]), 16, torch.Generator().manual_seed(0))
    assert len(record["gammas"]) > 2
    sequences = record["sequences"].repeat_interleave(decoder.num_chains, dim=0)
    cfg = SETTINGS[setting].cfg_scale
    with torch.no_grad():
        hidden = teacher(sequences, cfg_scale=cfg, use_cache=False, output_hidden_states=True).hidden_states
        fused = draft.fuse_features(hidden)
    done = sequences.shape[1] - 1  # slots 0 .. done - 1 were verified with committed context
    torch.testing.assert_close(decoder.features[:, 1 : done + 1], fused[:, :done], atol=1e-5, rtol=1e-4)
    caught_up = int(decoder.n_prev.min())
    fresh = DynamicCache(config=draft.config)
    features = torch.cat([torch.zeros_like(fused[:, :1]), fused[:, :-1]], dim=1)
    with torch.no_grad():
        draft(sequences[:, :caught_up], features[:, :caught_up], cache=fresh, use_cache=True, cfg_scale=cfg)
    for layer, reference in zip(decoder.draft_cache.layers, fresh.layers):
        torch.testing.assert_close(layer.keys[:, :, :caught_up], reference.keys, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("processing", [{}, {"cfg_scale": 2.0}, {"verification": "block"}],
                         ids=["plain", "cfg-chains", "block"])
def test_lossless_and_the_test_catches_a_wrong_residual(processing, monkeypatch):
    teacher, _ = small_pair()
    draft = make_feature_draft(teacher, 1, init=False).eval()
    N, label, K = 40_000, 1, SMALL["codebook_size"]
    verification = processing.pop("verification", "token")
    _, exact = exact_distribution(teacher, label, processing, 3)
    bound = tv_bound(len(exact), N)
    prompt = teacher.class_prompt([label] * N)

    def tv(num_drafts=1):
        out = speculative_sample(teacher, draft, prompt, gamma=2, generator=torch.Generator().manual_seed(0),
                                 cfg_scale=processing.get("cfg_scale"), num_drafts=num_drafts, mode="eager",
                                 verification=verification)
        return 0.5 * (empirical_distribution(out.sequences[:, 1:], K) - exact).abs().sum().item()

    if processing:  # guided, with two chains per row (multi-draft acceptance)
        assert tv(num_drafts=2) < bound
        return
    if verification == "block":
        assert tv() < bound
        return
    assert tv() < bound
    monkeypatch.setattr(sampling, "speculative_accept", wrong_residual_accept)
    assert tv() > bound


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_one_graph_no_recompiles_no_host_sync(pair, setting):
    teacher, draft = pair
    torch._dynamo.reset()
    counter = CompileCounter()
    prompt = teacher.class_prompt([0, 1, 2])
    compiled = SpeculativeDecoder(teacher, draft, 3, 3, SETTINGS[setting], mode="compile",
                                  compile_options={"backend": counter})
    first = run(compiled, prompt, 16, seed=0)
    run(compiled, prompt, 16, seed=1)
    assert counter.frame_count == 1
    eager = SpeculativeDecoder(teacher, draft, 3, 3, SETTINGS[setting], mode="eager")
    assert torch.equal(first.sequences, run(eager, prompt, 16, seed=0).sequences)
    eager.reset(prompt, 13)
    eager.noise.uniform_()
    with HostSyncCounter() as syncs:
        eager.round(3)
        eager.round(3)
    assert syncs.events == []


# -- training ---------------------------------------------------------------------------------------------------

def test_distillation_raises_acceptance_on_both_draft_steps():
    """A few steps of the feature draft's loss (2 unrolled steps) raise alpha on its first draft step (teacher
    features) and on its second (its own); the loss reaches the feature path and the unrolled step."""
    teacher = tiny_model(0, num_hidden_layers=3)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(0.5)
    teacher.requires_grad_(False)
    labels = torch.randint(0, 3, (256,), generator=torch.Generator().manual_seed(0))
    data = sample_sequences(teacher, class_prompts(teacher, labels), seed=0)
    held_out = sample_sequences(teacher, class_prompts(teacher, labels[:64]), seed=1)
    args = DistillArguments(student_layers=1, loss="tv", kl_weight=0.1, feature_draft=True, init_from_teacher=False)
    torch.manual_seed(0)
    draft = make_draft(args, teacher)
    one_step = DistillArguments(**{**vars(args), "ttt_steps": 1})
    assert distillation_loss(args, teacher, draft, data[:32]) != distillation_loss(one_step, teacher, draft, data[:32])
    before = expected_acceptance(teacher, draft, held_out)
    optimizer = torch.optim.Adam(draft.parameters(), lr=3e-3)
    for step in range(120):
        loss = distillation_loss(args, teacher, draft.train(), data[(step * 32) % 256 :][:32])
        optimizer.zero_grad()
        loss.backward()
        assert draft.fuse.weight.grad.abs().sum() > 0  # the teacher's features are trained on
        optimizer.step()
    after = expected_acceptance(teacher, draft.eval(), held_out)
    assert after["alpha"] > before["alpha"] + 0.1
    assert after["alpha_own_features"] > before["alpha_own_features"] + 0.1


def test_feature_draft_arguments():
    with pytest.raises(ValueError, match="lmbda"):
        DistillArguments(student_layers=1, loss="tv", feature_draft=True, lmbda=0.5)
    with pytest.raises(ValueError, match="loss"):
        DistillArguments(student_layers=1, feature_draft=True)  # the hybrid loss needs no features: refused
    with pytest.raises(ValueError, match="ttt_steps"):
        DistillArguments(student_layers=1, loss="tv", feature_draft=True, ttt_steps=0)
