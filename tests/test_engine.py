"""The decoding engine: compiled rounds equal eager ones, one graph per round with no recompiles, no host sync inside
a round, lossless on the compiled path, and the edge cases of batches, guidance, prompts and gamma."""

import dataclasses

import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.testing import CompileCounter
from transformers import DynamicCache

import hf_specdec.speculative.engine as engine
import hf_specdec.speculative.sampling as sampling
from hf_specdec import EarlyExitDraft, RaggedCache, plain_sample, speculative_sample
from hf_specdec.models import make_feature_draft
from hf_specdec.speculative import SamplingConfig, SpeculativeDecoder, SpeculativeOutput, clear_decoders
from tests.conftest import HostSyncCounter, tiny_model
from tests.test_speculative import SMALL, empirical_distribution, exact_distribution, small_pair, tv_bound
from tests.test_speculative import wrong_residual_accept

SETTINGS = {
    "greedy": SamplingConfig(do_sample=False),
    "sample": SamplingConfig(),
    "warped-cfg": SamplingConfig(temperature=0.8, top_k=5, top_p=0.9, cfg_scale=2.0),
    "multi-draft-cfg": SamplingConfig(cfg_scale=2.0, num_drafts=3),
    "tree": SamplingConfig(num_drafts=2, tree_depth=2),
}


@pytest.fixture(scope="module")
def pair():
    return tiny_model(0, num_hidden_layers=4), tiny_model(1, num_hidden_layers=1)


def run(decoder, prompt, new_tokens, seed=0, **kwargs):
    record = decoder.generate(prompt, new_tokens, torch.Generator().manual_seed(seed), **kwargs)
    return SpeculativeOutput.from_record(record, prompt.shape[1])


# -- compiled == eager, one graph per round ----------------------------------------------------------------------

@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("gamma", [0, 3])
def test_round_compiles_to_one_graph_and_never_recompiles(pair, setting, gamma):
    teacher, draft = pair
    torch._dynamo.reset()
    counter = CompileCounter()
    decoder = SpeculativeDecoder(teacher, draft if gamma else None, gamma, 3, SETTINGS[setting], mode="compile",
                                 compile_options={"backend": counter})
    prompt = teacher.class_prompt([0, 1, 2])
    first = run(decoder, prompt, 16, seed=0)
    second = run(decoder, prompt, 16, seed=1)  # a second call with the same shapes
    assert first.num_rounds + second.num_rounds > 2
    # fullgraph=True raises on any graph break; one frame for all rounds of both calls means no recompilation,
    # the property CUDA graph replay needs
    assert counter.frame_count == 1


def test_inductor_compiled_rounds_equal_eager(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 2, 1])
    for gamma, model in ((0, None), (3, draft)):
        for setting in (SETTINGS["warped-cfg"], SETTINGS["greedy"]):
            eager = SpeculativeDecoder(teacher, model, gamma, 3, setting, mode="eager")
            compiled = SpeculativeDecoder(teacher, model, gamma, 3, setting, mode="compile")
            # the same random numbers are drawn before every round, so even sampled images agree token for token
            assert torch.equal(run(compiled, prompt, 16).sequences, run(eager, prompt, 16).sequences)
    assert torch.equal(run(compiled, prompt, 16).sequences, teacher.generate(prompt, do_sample=False))
    streamed = teacher.class_prompt([0, 2, 1, 1, 0, 2, 2])  # more prompts than the compiled decoder's 3 rows
    assert torch.equal(run(compiled, streamed, 16).sequences, teacher.generate(streamed, do_sample=False))


def test_cpu_rounds_compile_with_the_cpp_wrapper_unless_told_otherwise(pair, monkeypatch):
    """On the CPU, Inductor's C++ wrapper is the default (measured faster, BENCHMARKS.md); a backend, a mode or
    Inductor options of the caller take precedence. Guards are filtered to the global-state one unless the caller
    asks for dynamo's guards or gives a mode (which `torch.compile` takes only without options)."""
    teacher, draft = pair
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: seen.append(kwargs) or fn)
    for options in (None, {"options": {"cpp_wrapper": False}}, {"backend": "eager"}, {"mode": "max-autotune"},
                    {"skip_guards": False}):
        SpeculativeDecoder(teacher, draft, 2, 1, mode="compile", compile_options=options)._round_fn(2)
    guards = {"guard_filter_fn": engine._global_state_guards}
    assert seen[0]["options"] == {"cpp_wrapper": True, **guards} and seen[0]["fullgraph"] is True
    assert seen[1]["options"] == {"cpp_wrapper": False, **guards}
    assert seen[2]["options"] == guards and "options" not in seen[3]
    assert seen[4]["options"] == {"cpp_wrapper": True} and "skip_guards" not in seen[4]


def test_guard_free_rounds_are_each_decoders_own():
    """Without dynamo's guards a compiled round must never run another decoder's compiled entry: decoders of the
    same shapes and gamma over different teachers each give their own teacher's tokens, and each compiled round is
    one entry of a code object of its own."""
    greedy = SamplingConfig(do_sample=False)
    teachers = [tiny_model(seed, num_hidden_layers=2) for seed in (0, 1)]
    prompt = teachers[0].class_prompt([1, 2])
    draft = tiny_model(2, num_hidden_layers=1)
    decoders = [SpeculativeDecoder(t, draft, 3, 2, greedy, "compile", compile_options={"backend": "eager"})
                for t in teachers]
    for _ in range(2):  # the second time replays
        for teacher, decoder in zip(teachers, decoders):
            assert torch.equal(decoder.generate(prompt)["sequences"], teacher.generate(prompt, do_sample=False))
    codes = [decoder._round_codes[3] for decoder in decoders]
    assert codes[0] is not codes[1] and all(len(_debug_get_cache_entry_list(code)) == 1 for code in codes)


def test_a_decoder_refuses_models_moved_after_it_was_built():
    """Its buffers and compiled rounds are made for the models' dtype and device (no dynamo guard checks it)."""
    teacher, draft = tiny_model(0, num_hidden_layers=2), tiny_model(1, num_hidden_layers=1)
    prompt = teacher.class_prompt([0])
    for mode in ("eager", "compile"):
        decoder = SpeculativeDecoder(teacher, draft, 2, 1, mode=mode, compile_options=None)
        decoder.generate(prompt)
        draft.to(torch.float64)
        with pytest.raises(ValueError, match="draft moved to torch.float64"):
            decoder.generate(prompt)
        draft.to(torch.float32)
    with pytest.raises(ValueError, match="skip_guards"):
        SpeculativeDecoder(teacher, draft, 2, 1, mode="compile", compile_options={"skip_guards": "yes"})


@pytest.mark.parametrize("processing", [{}, {"cfg_scale": 2.0}], ids=["plain", "cfg"])
def test_compiled_path_is_lossless_and_the_test_catches_a_wrong_residual(processing, monkeypatch):
    teacher, draft = small_pair()
    N, label, K = 40_000, 1, SMALL["codebook_size"]
    _, exact = exact_distribution(teacher, label, processing, 3)
    bound = tv_bound(len(exact), N)
    prompt = teacher.class_prompt([label] * N)
    setting = SamplingConfig(cfg_scale=processing.get("cfg_scale"))

    def tv(decoder):
        out = run(decoder, prompt, 3, seed=0)
        return 0.5 * (empirical_distribution(out.sequences[:, 1:], K) - exact).abs().sum().item()

    options = {"backend": "aot_eager"}  # the traced, functionalised graph that a CUDA graph replays
    assert tv(SpeculativeDecoder(teacher, draft, 2, N, setting, mode="compile", compile_options=options)) < bound
    monkeypatch.setattr(sampling, "speculative_accept", wrong_residual_accept)
    wrong = SpeculativeDecoder(teacher, draft, 2, N, setting, mode="compile", compile_options=options)
    assert tv(wrong) > bound


# -- no host synchronisation inside a round ------------------------------------------------------------------

def _one_round(decoder, prompt, gamma):
    decoder.reset(prompt, prompt.shape[1] + 12)
    decoder.noise.uniform_()
    with HostSyncCounter() as syncs:
        decoder.round(gamma)
        decoder.round(gamma)
    return syncs.events


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("gamma", [0, 1, 4])
def test_no_host_sync_inside_a_round(pair, setting, gamma):
    teacher, draft = pair
    decoder = SpeculativeDecoder(teacher, draft if gamma else None, gamma, 3, fit(SETTINGS[setting], gamma),
                                 mode="eager")
    assert _one_round(decoder, teacher.class_prompt([0, 1, 2]), gamma) == []


def fit(setting: SamplingConfig, gamma: int) -> SamplingConfig:
    """`setting` with its tree no deeper than a round's `gamma` drafts (a deeper one is refused)."""
    return dataclasses.replace(setting, tree_depth=min(setting.tree_depth, max(gamma, 1)))


def test_no_host_sync_with_self_speculation_and_relaxed_acceptance(pair):
    teacher, _ = pair
    K = teacher.config.codebook_size
    neighbours = sampling.latent_neighbours(torch.randn(K, 4, generator=torch.Generator().manual_seed(0)), 3)
    decoder = SpeculativeDecoder(teacher, EarlyExitDraft(teacher, 2), 3, 2, SamplingConfig(), mode="eager",
                                 relaxed_neighbours=neighbours)
    assert _one_round(decoder, teacher.class_prompt([0, 1]), 3) == []


def test_the_sync_check_catches_a_host_read(pair, monkeypatch):
    teacher, draft = pair
    commit = SpeculativeDecoder.commit

    def commit_after_asking_the_host(self, drafted, accepted, next_token, winner=None):
        if accepted.max() > drafted.shape[1]:  # bool(tensor): waits for the device
            raise AssertionError
        commit(self, drafted, accepted, next_token, winner)

    monkeypatch.setattr(SpeculativeDecoder, "commit", commit_after_asking_the_host)
    decoder = SpeculativeDecoder(teacher, draft, 2, 3, SamplingConfig(), mode="eager")
    assert _one_round(decoder, teacher.class_prompt([0, 1, 2]), 2)


def test_a_call_reads_the_host_once_per_batch_of_rounds(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2])
    plain = SpeculativeDecoder(teacher, None, 0, 3, SamplingConfig(), mode="eager")
    plain.decode(prompt, 16)
    with HostSyncCounter() as syncs:
        plain.decode(prompt, 16)  # the loop alone: `generate` first checks the prompt's values
    assert len(syncs.events) == 1  # 16 steps, one read at the end
    speculative = SpeculativeDecoder(teacher, draft, 3, 3, SamplingConfig(), mode="eager")
    with HostSyncCounter() as syncs:
        record = speculative.decode(prompt, 16)
    out = SpeculativeOutput.from_record(record, 1)
    assert 1 <= len(syncs.events) < out.num_rounds


# -- edge cases ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [1, 8, 16])
def test_gamma_at_least_the_remaining_tokens_and_long_prompts(pair, gamma):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2, 0])
    for new_tokens in (1, 2, 5):
        out = speculative_sample(teacher, draft, prompt, gamma=gamma, max_new_tokens=new_tokens, do_sample=False)
        assert torch.equal(out.sequences, teacher.generate(prompt, do_sample=False, max_new_tokens=new_tokens))
    prefix = teacher.generate(prompt, do_sample=False, max_new_tokens=14)  # 15 of the 17 positions filled
    out = speculative_sample(teacher, draft, prefix, gamma=gamma, do_sample=False, cfg_scale=1.5)
    assert torch.equal(out.sequences, teacher.generate(prefix, do_sample=False, cfg_scale=1.5))


def test_rows_finishing_in_different_rounds(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2, 0, 1, 2, 0])
    out = speculative_sample(teacher, EarlyExitDraft(teacher, 2), prompt, gamma=5, do_sample=False)
    assert torch.equal(out.sequences, teacher.generate(prompt, do_sample=False))
    finished = out.proposed_per_round == 0  # (rounds, B): rows that were already done in a round
    assert finished.any() and not finished.all(dim=1).any()  # some rows waited, and no round was wasted on all
    sampled = speculative_sample(teacher, draft, prompt, gamma=5, generator=torch.Generator().manual_seed(0))
    assert (sampled.proposed_per_round == 0).any()
    assert sampled.evaluated_by_position.sum() == sampled.evaluated_per_round.sum()


# -- more prompts than rows: continuous batching -------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 3, 9])
def test_streamed_prompts_equal_the_teacher_greedy(pair, batch_size):
    """7 prompts through 1, 3 or 9 rows (a row takes the next prompt when its image is done; 9: two rows idle): each
    image equals the teacher's, in the prompts' order, however stale the rows' caches are."""
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2, 0, 1, 2, 1])
    expected = teacher.generate(prompt, do_sample=False)
    for model in (draft, EarlyExitDraft(teacher, 2)):
        for setting in ({}, {"cfg_scale": 2.0}, {"num_drafts": 2}):
            out = speculative_sample(teacher, model, prompt, gamma=3, do_sample=False, batch_size=batch_size, **setting)
            assert torch.equal(out.sequences, teacher.generate(prompt, do_sample=False, **{
                k: v for k, v in setting.items() if k == "cfg_scale"}))
            assert out.accepted_per_round.shape[1] == min(batch_size, len(prompt))  # rows that drew images
            assert out.evaluated_by_position.sum() == out.evaluated_per_round.sum()
    assert torch.equal(plain_sample(teacher, prompt, do_sample=False, batch_size=batch_size), expected)


def code_prompts(teacher, labels, codes: int, seed: int = 0):
    """Class tokens followed by `codes` random codes each: image completion prompts."""
    generator = torch.Generator().manual_seed(seed)
    random_codes = torch.randint(0, teacher.config.codebook_size, (len(labels), codes), generator=generator)
    return torch.cat([teacher.class_prompt(labels), random_codes], dim=1)


@pytest.mark.parametrize("batch_size", [1, 3, 9])
def test_streamed_code_prompts_equal_the_teacher_greedy(pair, batch_size):
    """Prompts longer than one token, each different, streamed through fewer or more rows: a refilled row's prompt is
    prefilled into both caches (the other rows keep theirs) and every image equals the teacher's."""
    teacher, draft = pair
    prompt = code_prompts(teacher, [0, 1, 2, 0, 1, 2, 1], codes=5)
    for model in (draft, EarlyExitDraft(teacher, 2)):
        for setting in ({}, {"cfg_scale": 2.0}, {"num_drafts": 2}):
            expected = teacher.generate(prompt, do_sample=False, **{k: v for k, v in setting.items() if k == "cfg_scale"})
            out = speculative_sample(teacher, model, prompt, gamma=3, do_sample=False, batch_size=batch_size, **setting)
            assert torch.equal(out.sequences, expected), (batch_size, setting)
            assert out.evaluated_by_position.sum() == out.evaluated_per_round.sum()
    assert torch.equal(plain_sample(teacher, prompt, do_sample=False, batch_size=batch_size),
                       teacher.generate(prompt, do_sample=False))


def test_streamed_code_prompts_are_lossless_and_the_test_catches_a_wrong_residual(monkeypatch):
    """20,000 two-token prompts (class, first code 1 or 2, alternating) through 2,000 rows: the two codes after each
    prompt follow the teacher's conditional distribution given it; the wrong residual is caught."""
    teacher, draft = small_pair()
    N, label, K = 20_000, 1, SMALL["codebook_size"]
    _, exact = exact_distribution(teacher, label, {}, 3)
    conditional = exact.view(K, K * K)
    first = torch.tensor([1, 2]).repeat(N // 2)
    prompt = torch.cat([teacher.class_prompt([label] * N), first[:, None]], dim=1)
    bound = tv_bound(K * K, N // 2)

    def tv():
        out = speculative_sample(teacher, draft, prompt, gamma=2, batch_size=N // 10, mode="eager",
                                 generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.sequences[:, :2], prompt)
        return max(0.5 * (empirical_distribution(out.sequences[first == c, 2:], K)
                          - conditional[c] / conditional[c].sum()).abs().sum().item() for c in (1, 2))

    assert tv() < bound
    monkeypatch.setattr(sampling, "speculative_accept", wrong_residual_accept)
    clear_decoders()
    assert tv() > bound
    clear_decoders()


def test_streaming_keeps_rows_busy(pair):
    """Rows finish in different rounds; streamed, a finished row takes the next prompt instead of idling until the
    slowest row of its batch is done, so fewer row-rounds are idle than with one call per batch of 2."""
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2, 0, 1, 2, 0, 1])
    early_exit = EarlyExitDraft(teacher, 2)
    streamed = speculative_sample(teacher, early_exit, prompt, gamma=5, do_sample=False, batch_size=2)
    chunks = [speculative_sample(teacher, early_exit, prompt[i : i + 2], gamma=5, do_sample=False) for i in (0, 2, 4, 6)]
    idle = lambda out: (out.proposed_per_round == 0).sum().item()  # noqa: E731
    assert idle(streamed) < sum(idle(out) for out in chunks)
    assert torch.equal(streamed.sequences, torch.cat([out.sequences for out in chunks]))
    # every image's new tokens are counted once: tokens per teacher call = images x new tokens / row-rounds
    assert streamed.tokens_per_teacher_call == pytest.approx(8 * 16 / (2 * streamed.num_rounds))


@pytest.mark.parametrize("processing", [{}, {"cfg_scale": 2.0}], ids=["plain", "cfg"])
def test_streamed_sampling_is_lossless_and_the_test_catches_a_wrong_residual(processing, monkeypatch):
    """40,000 prompts through 4,000 rows, refilled as images finish: the images follow the teacher's distribution
    (a refilled row's stale cache slots and the refill timing do not bias them); the wrong residual is caught."""
    teacher, draft = small_pair()
    N, label, K = 40_000, 1, SMALL["codebook_size"]
    _, exact = exact_distribution(teacher, label, processing, 3)
    bound = tv_bound(len(exact), N)
    prompt = teacher.class_prompt([label] * N)

    def tv():
        out = speculative_sample(teacher, draft, prompt, gamma=2, batch_size=N // 10, mode="eager",
                                 generator=torch.Generator().manual_seed(0), **processing)
        return 0.5 * (empirical_distribution(out.sequences[:, 1:], K) - exact).abs().sum().item()

    assert tv() < bound
    monkeypatch.setattr(sampling, "speculative_accept", wrong_residual_accept)
    clear_decoders()
    assert tv() > bound
    clear_decoders()


def test_ragged_cache_is_a_transformers_cache(pair):
    teacher, _ = pair
    prompt = teacher.class_prompt([0, 1])
    cache = RaggedCache(teacher.num_layers, teacher.config.max_position_embeddings)
    assert torch.equal(teacher.generate(prompt, do_sample=False, cache=cache), teacher.generate(prompt, do_sample=False))
    length = cache.get_seq_length()
    assert isinstance(length, torch.Tensor) and int(length) == teacher.config.max_position_embeddings - 1
    cache.crop(-3)
    assert int(cache.get_seq_length()) == teacher.config.max_position_embeddings - 4
    # the same forward on a ragged cache and a dynamic one
    ids = teacher.generate(prompt, do_sample=False)
    ragged, dynamic = RaggedCache(teacher.num_layers, ids.shape[1]), DynamicCache(config=teacher.config)
    with torch.no_grad():
        a = teacher(ids[:, :9], cache=ragged).logits
        b = teacher(ids[:, :9], cache=dynamic).logits
    torch.testing.assert_close(a, b)


def test_decoders_are_reused_across_calls(pair):
    from hf_specdec.speculative import get_decoder

    teacher, draft = pair
    first = get_decoder(teacher, draft, 4, 2, SamplingConfig())
    assert get_decoder(teacher, draft, 4, 2, SamplingConfig()) is first
    assert get_decoder(teacher, draft, 4, 3, SamplingConfig()) is not first  # another batch size
    assert get_decoder(teacher, draft, 4, 2, SamplingConfig(temperature=0.5)) is not first
    prompt = teacher.class_prompt([0, 1])
    assert torch.equal(plain_sample(teacher, prompt, do_sample=False), plain_sample(teacher, prompt, do_sample=False))


def test_frozen_weights_path_is_lossless():
    """The exact-distribution test on Inductor's frozen-weights rounds (`freeze_weights=True`): the weights are
    constants of the compiled round, the random numbers of every round must not be (they were, once)."""
    teacher, draft = small_pair()
    N, label, K = 40_000, 1, SMALL["codebook_size"]
    _, exact = exact_distribution(teacher, label, {}, 3)
    decoder = SpeculativeDecoder(teacher, draft, 2, N, mode="compile", compile_options={"freeze_weights": True})
    out = run(decoder, teacher.class_prompt([label] * N), 3, seed=0)
    assert 0.5 * (empirical_distribution(out.sequences[:, 1:], K) - exact).abs().sum().item() < tv_bound(len(exact), N)


def test_frozen_weights_sample_like_eager_on_every_round_kind():
    """Feature draft, block verification, two chains and guidance with frozen weights: the same sampled tokens as
    eager rounds given the same random numbers (each kind has buffers of its own that must stay inputs)."""
    teacher, draft = tiny_model(0, num_hidden_layers=3), tiny_model(1, num_hidden_layers=1)
    feature = make_feature_draft(teacher, 1, init=False).eval()
    prompt = teacher.class_prompt([0, 1])
    for model, setting in ((feature, SamplingConfig()), (draft, SamplingConfig(verification="block")),
                           (draft, SamplingConfig(num_drafts=2)), (draft, SamplingConfig(cfg_scale=2.0))):
        out, expected = (SpeculativeDecoder(teacher, model, 3, 2, setting, mode, compile_options=options).generate(
            prompt, None, torch.Generator().manual_seed(0))["sequences"]
            for mode, options in (("compile", {"freeze_weights": True}), ("eager", None)))
        assert torch.equal(out, expected), setting


def test_frozen_weights_equal_eager_and_refuse_changed_weights():
    """`compile_options={"freeze_weights": True}` compiles the weights in as constants (Inductor's C++ GEMM
    templates): the same tokens as eager decoding, greedy and sampled (the same random numbers before every round,
    which must not be frozen with the weights), at any length, and a call after the weights changed is refused."""
    teacher, draft = tiny_model(0, num_hidden_layers=2), tiny_model(1, num_hidden_layers=1)
    prompt = teacher.class_prompt([0, 1])
    greedy = SamplingConfig(do_sample=False)
    for model in (None, draft):
        sampled = SpeculativeDecoder(teacher, model, 3, 2, mode="compile", compile_options={"freeze_weights": True})
        eager = SpeculativeDecoder(teacher, model, 3, 2, mode="eager")
        for seed, new_tokens in ((0, None), (1, None), (2, 5)):
            out, expected = (decoder.generate(prompt, new_tokens, torch.Generator().manual_seed(seed))["sequences"]
                             for decoder in (sampled, eager))
            assert torch.equal(out, expected)
    frozen = SpeculativeDecoder(teacher, draft, 3, 2, greedy, "compile", compile_options={"freeze_weights": True})
    expected = SpeculativeDecoder(teacher, draft, 3, 2, greedy, "eager").generate(prompt)["sequences"]
    assert torch.equal(frozen.generate(prompt)["sequences"], expected)
    assert torch.equal(frozen.generate(prompt)["sequences"], expected)  # replayed
    out = speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False, mode="compile", freeze_weights=True)
    assert torch.equal(out.sequences, expected)  # the entry point's own (cached) frozen decoder
    with pytest.raises(ValueError, match="freeze_weights.*compile"):
        plain_sample(teacher, prompt, freeze_weights=True)  # eager: nothing to freeze into
    with torch.no_grad():
        draft.lm_head.weight.mul_(1.0)  # an in-place write, as an optimizer step makes
    with pytest.raises(ValueError, match="weights changed"):
        frozen.generate(prompt)


def test_a_cached_decoder_is_rebuilt_when_the_models_change_dtype():
    """The cached decoder's buffers are allocated for the models' dtype and device: after `.to(...)` the next call
    must build a new one (it used to fail in the cache update)."""
    teacher, draft = tiny_model(0, num_hidden_layers=2), tiny_model(1, num_hidden_layers=1)
    prompt = teacher.class_prompt([0, 1])
    speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False)
    teacher.to(torch.float64), draft.to(torch.float64)
    out = speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False)
    assert torch.equal(out.sequences, plain_sample(teacher, prompt, do_sample=False))
    assert out.sequences.shape == (2, teacher.config.max_position_embeddings)


def test_gpu_benchmark_script_runs_its_cpu_path(tmp_path):
    import json
    import os
    import subprocess
    import sys

    result = subprocess.run(["bash", "scripts/gpu_engine_benchmark.sh", str(tmp_path), "cpu"],
                            env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "check.json").exists(), f"section 1 wrote nothing:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    check = json.loads((tmp_path / "check.json").read_text())
    assert check and all(value is True or value == 1.0 for value in check.values()), check
    records = json.loads((tmp_path / "main" / "results.json").read_text())["records"]
    assert {r["method"] for r in records} >= {"plain/eager", "speculative/eager", "plain/legacy", "speculative/legacy"}
    assert not [r for r in records if "error" in r]


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda t, d: SpeculativeDecoder(t, d, gamma=10**9), "gamma"),
        (lambda t, d: SpeculativeDecoder(t, d, gamma=0), "gamma"),
        (lambda t, d: SpeculativeDecoder(t, d, batch_size=0), "batch_size"),
        (lambda t, d: SpeculativeDecoder(t, d, mode="cuda-graph"), "mode"),
        (lambda t, d: SpeculativeDecoder(t, d, mode="fast"), "mode"),
        (lambda t, d: SpeculativeDecoder(t, d, compile_options={"freeze_weights": True}), "freeze_weights"),
        (lambda t, d: SpeculativeDecoder(t, tiny_model(codebook_size=32), 2), "draft"),
        (lambda t, d: SamplingConfig(temperature=float("nan")), "temperature"),
        (lambda t, d: SamplingConfig(temperature=0), "temperature"),
        (lambda t, d: SamplingConfig(top_k=0), "top_k"),
        (lambda t, d: SamplingConfig(top_p=1.5), "top_p"),
        (lambda t, d: SamplingConfig(cfg_scale=float("inf")), "cfg_scale"),
        (lambda t, d: SamplingConfig(verification="tree"), "verification"),
        (lambda t, d: speculative_sample(t, d, t.class_prompt([0, 1]), batch_size=0), "batch_size"),
        (lambda t, d: plain_sample(t, t.class_prompt([0, 1]), batch_size=1.5), "batch_size"),
        (lambda t, d: SpeculativeDecoder(t, d, 2).generate(t.class_prompt([0]).float(), 4), "input_ids"),
        (lambda t, d: SpeculativeDecoder(t, d, 2).generate(t.class_prompt([0]), 0), "max_new_tokens"),
        (lambda t, d: plain_sample(t, t.class_prompt([0])[0]), "input_ids"),
        (lambda t, d: plain_sample(t, t.class_prompt([0]), temperature=0.0), "temperature"),
        (lambda t, d: plain_sample(t, t.class_prompt([0]), top_k=0), "top_k"),
        (lambda t, d: plain_sample(t, t.class_prompt([0]), top_p=1.5), "top_p"),
        (lambda t, d: plain_sample(t, t.class_prompt([0]), generator=0), "generator"),
    ],
)
def test_the_engine_refuses_bad_arguments_before_allocating(pair, make, name):
    teacher, draft = pair
    with pytest.raises(ValueError, match=name):
        make(teacher, draft)


@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("setting", [SamplingConfig(num_drafts=3), SamplingConfig(num_drafts=2, tree_depth=2)],
                         ids=["chains", "tree"])
def test_multi_draft_chains_share_the_committed_cache(pair, setting, gamma):
    """After a call every chain of a row holds the teacher's and the draft's keys of the committed tokens, as a fresh
    forward computes them: commit copied the winning chain's slots over the others' drafts."""
    teacher, draft = pair
    decoder = SpeculativeDecoder(teacher, draft, gamma, 2, fit(setting, gamma), mode="eager")
    prompt = teacher.class_prompt([0, 2])
    record = decoder.generate(prompt, 16, torch.Generator().manual_seed(0))
    assert len(record["gammas"]) > 2  # several rounds, so later rounds ran on copied slots
    sequences = record["sequences"].repeat_interleave(decoder.num_chains, dim=0)
    # The teacher's cache holds every slot but the last token's (never fed); the draft's is valid up to slot n - 3
    # (its next round would re-read slots n - 2 and n - 1 first, see `draft_tokens`).
    n = sequences.shape[1]
    for model, cache, valid in ((teacher, decoder.teacher_cache, n - 1), (draft, decoder.draft_cache, n - 2)):
        fresh = DynamicCache(config=model.config)
        model(sequences[:, :valid], cache=fresh, use_cache=True)
        for layer, reference in zip(cache.layers, fresh.layers):
            torch.testing.assert_close(layer.keys[:, :, :valid], reference.keys, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(layer.values[:, :, :valid], reference.values, atol=1e-5, rtol=1e-4)


def test_tree_chains_share_their_node_draws(pair):
    """`tree_depth=2`, `num_drafts=2`: four chains per row; chains 0-1 and 2-3 draw the same first token (one tree
    node each), and their second tokens are drawn apart."""
    teacher, draft = pair
    decoder = SpeculativeDecoder(teacher, draft, 3, 8, SamplingConfig(num_drafts=2, tree_depth=2), mode="eager")
    decoder.reset(teacher.class_prompt(torch.arange(8) % 3), 1 + 16)
    decoder.noise.uniform_(generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        drafted, _ = decoder.draft_tokens(3, decoder._noise(3)[0])
    drafted = drafted.view(8, 4, 3)
    assert torch.equal(drafted[:, 0, 0], drafted[:, 1, 0]) and torch.equal(drafted[:, 2, 0], drafted[:, 3, 0])
    assert not torch.equal(drafted[:, 0, 0], drafted[:, 2, 0])  # two nodes: independent draws
    assert not torch.equal(drafted[:, 0, 1], drafted[:, 1, 1])  # the second position branches again
