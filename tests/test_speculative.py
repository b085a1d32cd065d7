"""Speculative decoding: greedy parity, lossless sampling (statistical), statistics, HF assisted, bad input."""

import copy
import itertools
import math

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

import hf_specdec.speculative.sampling as sampling
from hf_specdec import EarlyExitDraft, plain_sample, speculative_sample
from hf_specdec.speculative import (
    acceptance_alpha,
    choose_gamma,
    clear_decoders,
    expected_speedup,
    speculative_accept,
    warp_logits,
)
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def pair():
    return tiny_model(0, num_hidden_layers=4), tiny_model(1, num_hidden_layers=1)


def tv_bound(num_outcomes: int, num_samples: int, delta: float = 1e-6) -> float:
    """High-probability bound on TV(empirical, true): E[TV] <= 0.5 sqrt(M / N) (Cauchy-Schwarz), plus McDiarmid's
    deviation sqrt(ln(1/delta) / (2N)) since one sample moves TV by at most 1/N."""
    return 0.5 * math.sqrt(num_outcomes / num_samples) + math.sqrt(math.log(1 / delta) / (2 * num_samples))


# -- greedy: token-for-token equal to the teacher ------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("gamma", [1, 3, 8])
@pytest.mark.parametrize("draft_kind", ["random", "truncated", "self", "teacher"])
def test_greedy_equals_teacher_greedy(pair, batch, gamma, draft_kind):
    teacher, random_draft = pair
    draft = {
        "random": random_draft,
        "truncated": EarlyExitDraft(teacher, 2),
        "self": EarlyExitDraft(teacher, 1),
        "teacher": teacher,
    }[draft_kind]
    prompt = teacher.class_prompt(torch.arange(batch) % teacher.config.num_classes)
    expected = teacher.generate(prompt, do_sample=False)
    out = speculative_sample(teacher, draft, prompt, gamma=gamma, do_sample=False)
    assert torch.equal(out.sequences, expected)
    if draft_kind == "teacher":  # a perfect draft is always accepted
        assert out.acceptance_rate == 1.0


def test_greedy_with_guidance_prefix_and_short_length(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 2, 1])
    assert torch.equal(
        speculative_sample(teacher, draft, prompt, gamma=4, do_sample=False, cfg_scale=2.5).sequences,
        teacher.generate(prompt, do_sample=False, cfg_scale=2.5),
    )
    prefix = teacher.generate(prompt, do_sample=False, max_new_tokens=3)
    assert torch.equal(
        speculative_sample(teacher, draft, prefix, gamma=3, do_sample=False, max_new_tokens=6).sequences,
        teacher.generate(prefix, do_sample=False, max_new_tokens=6),
    )


def test_hf_assisted_greedy_equals_teacher_greedy(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([2])
    assert draft.generation_config.assistant_confidence_threshold == 0.0
    assert torch.equal(
        teacher.generate(prompt, assistant_model=draft, do_sample=False), teacher.generate(prompt, do_sample=False)
    )


# -- the pure pieces -------------------------------------------------------------------------------------------

def test_warp_logits_matches_transformers_processors():
    logits = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    for temperature, top_k, top_p in [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8), (0.9, 10, 0.6)]:
        processors = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_k:
            processors.append(TopKLogitsWarper(top_k))
        if top_p:
            processors.append(TopPLogitsWarper(top_p))
        expected = processors(torch.zeros(6, 1, dtype=torch.long), logits.clone())
        torch.testing.assert_close(warp_logits(logits, temperature, top_k, top_p), expected)


def test_speculative_accept_outputs_p_exactly():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    N = 200_000
    drafts = torch.multinomial(q.expand(N, 4), 1, replacement=True, generator=g)  # (N, 1)
    n, nxt = speculative_accept(p.expand(N, 2, 4), q.expand(N, 1, 4), drafts, g)
    first = torch.where(n == 1, drafts[:, 0], nxt)
    empirical = torch.bincount(first, minlength=4) / N
    assert 0.5 * (empirical - p).abs().sum() < tv_bound(4, N)
    assert abs(n.float().mean().item() - acceptance_alpha(p, q).item()) < 0.01  # alpha = sum min(p, q) = 0.6


def test_speedup_formula_and_gamma_choice():
    assert expected_speedup(0.0, 3, 0.1) == pytest.approx(1 / 1.3)
    assert expected_speedup(0.8, 4, 0.0) == pytest.approx((1 - 0.8**5) / 0.2)
    assert choose_gamma(0.95, 0.05, 16) > choose_gamma(0.5, 0.05, 16) >= 1
    assert choose_gamma(0.9, 1.0, 8) == 1  # a draft as slow as the teacher is only worth a token


# -- lossless sampling, checked against the exact distribution ------------------------------------------------

def exact_distribution(model, label, processing, new_tokens):
    """Probability of every code sequence of length `new_tokens` under `model.generate` with `processing`."""
    K = model.config.codebook_size
    sequences = torch.tensor(list(itertools.product(range(K), repeat=new_tokens)))
    ids = torch.cat([torch.full((len(sequences), 1), model.config.codebook_size + label), sequences], dim=1)
    with torch.no_grad():
        logits = model(ids, cfg_scale=processing.get("cfg_scale"), use_cache=False).logits[:, :-1]
    logp = warp_logits(logits, processing.get("temperature", 1.0), processing.get("top_k")).log_softmax(-1)
    joint = logp.gather(-1, sequences[..., None]).squeeze(-1).sum(-1).exp()
    return sequences, joint


def empirical_distribution(samples, K):
    codes = (samples * K ** torch.arange(samples.shape[1] - 1, -1, -1)).sum(1)
    return torch.bincount(codes, minlength=K ** samples.shape[1]).float() / len(samples)


SMALL = dict(codebook_size=4, num_classes=2, grid_h=1, grid_w=3)


def small_pair():
    teacher, draft = tiny_model(0, num_hidden_layers=3, **SMALL), tiny_model(7, num_hidden_layers=1, **SMALL)
    with torch.no_grad():  # flatter than the default so that every outcome is seen
        teacher.lm_head.weight.mul_(0.15)
        draft.lm_head.weight.mul_(0.15)
    return teacher, draft


def wrong_residual_accept(p, q, draft_tokens, generator=None, r=None, exponentials=None):
    """A classic bug: on rejection, resample from p instead of norm(max(0, p - q))."""
    n, _ = speculative_accept(p, q, draft_tokens, generator, r, exponentials)
    rows = torch.arange(len(n))
    return n, sampling.sample_categorical(p[rows, n], generator, exponentials)


@pytest.mark.parametrize(
    "processing", [{}, {"temperature": 0.7, "top_k": 3}, {"cfg_scale": 2.0}], ids=["plain", "temp-topk", "cfg"]
)
def test_speculative_sampling_is_lossless(processing, monkeypatch):
    teacher, draft = small_pair()
    N, label, K = 40_000, 1, SMALL["codebook_size"]
    _, exact = exact_distribution(teacher, label, processing, 3)
    _, draft_exact = exact_distribution(draft, label, processing, 3)
    bound = tv_bound(len(exact), N)
    assert 0.5 * (draft_exact - exact).abs().sum() > 3 * bound  # the draft alone would be caught

    prompt = teacher.class_prompt([label] * N)
    kwargs = dict(gamma=2, do_sample=True, generator=torch.Generator().manual_seed(0), **processing)
    out = speculative_sample(teacher, draft, prompt, **kwargs)
    tv = 0.5 * (empirical_distribution(out.sequences[:, 1:], K) - exact).abs().sum().item()
    assert tv < bound, f"TV {tv:.4f} exceeds {bound:.4f}"
    assert 0.0 < out.acceptance_rate < 1.0

    # the same test catches a sampler with the classic wrong residual
    monkeypatch.setattr(sampling, "speculative_accept", wrong_residual_accept)
    clear_decoders()  # a new decoder, so that a compiled round would trace the patched rule too
    wrong = speculative_sample(teacher, draft, prompt, **kwargs)
    wrong_tv = 0.5 * (empirical_distribution(wrong.sequences[:, 1:], K) - exact).abs().sum().item()
    assert wrong_tv > bound


@pytest.mark.parametrize("processing", [{}, {"cfg_scale": 2.0}], ids=["plain", "cfg"])
def test_plain_loop_samples_the_teacher(processing):
    teacher, draft = small_pair()
    N, label, K = 40_000, 1, SMALL["codebook_size"]
    _, exact = exact_distribution(teacher, label, processing, 3)
    _, draft_exact = exact_distribution(draft, label, processing, 3)
    samples = plain_sample(teacher, teacher.class_prompt([label] * N), generator=torch.Generator().manual_seed(1),
                           **processing)
    tv = 0.5 * (empirical_distribution(samples[:, 1:], K) - exact).abs().sum().item()
    assert tv < tv_bound(len(exact), N), tv
    # and the same bound separates a different model's samples
    wrong = plain_sample(draft, draft.class_prompt([label] * N), generator=torch.Generator().manual_seed(1), **processing)
    assert 0.5 * (empirical_distribution(wrong[:, 1:], K) - exact).abs().sum().item() > tv_bound(len(exact), N)


def test_sample_categorical_draws_the_normalised_weights():
    from hf_specdec.speculative.sampling import sample_categorical

    g = torch.Generator().manual_seed(0)
    weights = torch.tensor([[2.0, 0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 3.0, 0.0]])  # unnormalised, with zeros
    N = 200_000
    draws = sample_categorical(weights.repeat(N, 1), g).view(N, 2)
    for row in range(2):
        empirical = torch.bincount(draws[:, row], minlength=5) / N
        target = weights[row] / weights[row].sum()
        assert 0.5 * (empirical - target).abs().sum() < tv_bound(5, N)
        assert (empirical[target == 0] == 0).all()  # zero weight is never drawn


def test_hf_assisted_sampling_is_lossless():
    teacher, draft = small_pair()
    label, K, N = 0, SMALL["codebook_size"], 3000
    _, exact = exact_distribution(teacher, label, {}, 3)
    torch.manual_seed(0)
    prompt = teacher.class_prompt([label])
    samples = torch.stack(
        [teacher.generate(prompt, assistant_model=draft, do_sample=True, top_k=None)[0, 1:] for _ in range(N)]
    )
    tv = 0.5 * (empirical_distribution(samples, K) - exact).abs().sum().item()
    assert tv < tv_bound(len(exact), N)


# -- statistics and bad input ----------------------------------------------------------------------------------

def test_statistics_are_consistent(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2, 0, 1, 2])
    gamma = 4
    out = speculative_sample(teacher, draft, prompt, gamma=gamma, generator=torch.Generator().manual_seed(1))
    new = teacher.config.num_image_tokens
    assert out.sequences.shape == (6, 1 + new)
    assert (out.sequences[:, 1:] < teacher.config.codebook_size).all()
    assert (out.accepted_per_round <= out.evaluated_per_round).all()
    assert (out.evaluated_per_round <= out.proposed_per_round).all()
    assert 0.0 <= out.acceptance_rate <= out.alpha <= 1.0
    assert (out.proposed_per_round <= gamma).all()
    assert all(1 <= g <= gamma for g in out.gamma_per_round[:-1])
    assert out.accepted_by_position.shape == (new,)
    assert ((out.acceptance_by_position >= 0) & (out.acceptance_by_position <= 1)).all()
    assert out.accepted_by_position.sum() == out.accepted_per_round.sum()
    assert out.evaluated_by_position.sum() == out.evaluated_per_round.sum()
    # every round yields accepted + 1 tokens per unfinished row; the counts add up to the image
    assert out.teacher_forwards == out.num_rounds
    assert out.draft_forwards == sum(out.gamma_per_round)
    assert out.num_rounds >= math.ceil(new / (gamma + 1))
    adaptive = speculative_sample(teacher, EarlyExitDraft(teacher, 2), prompt, gamma=6, adaptive_gamma=True,
                                  cost_ratio=0.2, generator=torch.Generator().manual_seed(2))
    assert adaptive.sequences.shape == out.sequences.shape
    assert all(0 <= g <= 6 for g in adaptive.gamma_per_round)


def test_bad_input_names_the_argument(pair):
    teacher, draft = pair
    prompt = teacher.class_prompt([0])
    cases = [
        (dict(draft=tiny_model(codebook_size=32)), "draft"),
        (dict(draft=tiny_model(num_classes=5)), "draft"),
        (dict(gamma=0), "gamma"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=1.5), "top_p"),
        (dict(input_ids=torch.tensor([[3]])), "input_ids"),
        (dict(max_new_tokens=100), "max_new_tokens"),
        (dict(draft=copy.deepcopy(draft).to(torch.float64)), "draft"),  # another dtype than the teacher
        (dict(input_ids=prompt.to("meta")), "input_ids"),  # another device than the models
        (dict(draft="checkpoints/digits/draft-1L"), "draft.*from_pretrained"),  # a path is not a model
        (dict(teacher=None), "teacher"),
        (dict(cost_ratio=0.1), "cost_ratio.*adaptive_gamma"),  # read by adaptive gamma only
    ]
    for overrides, name in cases:
        kwargs = {**dict(teacher=teacher, draft=draft, input_ids=prompt), **overrides}
        with pytest.raises(ValueError, match=name):
            speculative_sample(**kwargs)
    with pytest.raises(ValueError, match="num_layers"):
        EarlyExitDraft(teacher, 4)
    with pytest.raises(ValueError, match="at least 2 layers"):
        EarlyExitDraft(tiny_model(num_hidden_layers=1), 1)
    with pytest.raises(ValueError, match="model"):
        plain_sample("checkpoints/digits/teacher", prompt)


def test_reachable_through_generate_custom_generate(pair):
    from hf_specdec import speculative_generate

    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2])
    greedy = teacher.generate(prompt, custom_generate=speculative_generate, draft_model=draft, gamma=3, do_sample=False)
    assert torch.equal(greedy, teacher.generate(prompt, do_sample=False))
    sampled = teacher.generate(
        prompt, custom_generate=speculative_generate, draft_model=draft, gamma=3, do_sample=True, top_k=5,
        temperature=0.8, generator=torch.Generator().manual_seed(3),
    )
    direct = speculative_sample(teacher, draft, prompt, gamma=3, top_k=5, temperature=0.8,
                                generator=torch.Generator().manual_seed(3))
    assert torch.equal(sampled, direct.sequences)
    with pytest.raises(ValueError, match="draft_model"):
        teacher.generate(prompt, custom_generate=speculative_generate, do_sample=False)
    with pytest.raises(ValueError, match="num_beams"):  # returned beams x rows sampled sequences before
        teacher.generate(prompt, custom_generate=speculative_generate, draft_model=draft, num_beams=2)
    # The README's call: sampling with no top_k (generate() fills transformers' 0, "off") was refused.
    sampled = teacher.generate(prompt, custom_generate=speculative_generate, draft_model=draft, gamma=3,
                               do_sample=True, generator=torch.Generator().manual_seed(4))
    direct = speculative_sample(teacher, draft, prompt, gamma=3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(sampled, direct.sequences)


def test_custom_generate_refuses_what_it_would_drop(pair):
    """Options plain `generate()` honours and the custom decoding method never saw: refused, not ignored."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    from hf_specdec import speculative_generate

    class StopAll(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.ones(input_ids.shape[0], dtype=torch.bool)

    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1])
    call = dict(custom_generate=speculative_generate, draft_model=draft, do_sample=False)
    with pytest.raises(ValueError, match="StopAll"):
        teacher.generate(prompt, stopping_criteria=StoppingCriteriaList([StopAll()]), **call)
    with pytest.raises(ValueError, match="MaxTimeCriteria"):
        teacher.generate(prompt, max_time=60.0, **call)
    with pytest.raises(ValueError, match="`streamer`"):
        teacher.generate(prompt, streamer=object(), **call)
    with pytest.raises(ValueError, match="`assistant_model`"):
        teacher.generate(prompt, assistant_model=draft, **call)
    codes = teacher.generate(prompt, do_sample=False)[:, :4]
    with pytest.raises(ValueError, match="`attention_mask` must be all ones"):
        teacher.generate(codes, attention_mask=torch.tensor([[1, 1, 0, 1]] * 2), **call)
    assert torch.equal(teacher.generate(codes, attention_mask=torch.ones_like(codes), **call),
                       teacher.generate(prompt, do_sample=False))


def test_relaxed_acceptance_is_opt_in_and_accepts_more(pair):
    from hf_specdec.speculative import latent_neighbours

    teacher, draft = pair
    K = teacher.config.codebook_size
    codebook = torch.randn(K, 8, generator=torch.Generator().manual_seed(0))
    itself = latent_neighbours(codebook, 1)
    assert torch.equal(itself[:, 0], torch.arange(K))
    near = latent_neighbours(codebook, 4)
    assert torch.equal(near[:, 0], torch.arange(K))
    far_only = latent_neighbours(codebook, 4, max_distance=0.0)  # nothing within distance 0: only itself
    assert (far_only == torch.arange(K)[:, None]).all()

    prompt = teacher.class_prompt(torch.arange(300) % 3)
    run = lambda neighbours: speculative_sample(  # noqa: E731
        teacher, draft, prompt, gamma=3, relaxed_neighbours=neighbours, generator=torch.Generator().manual_seed(5)
    )
    exact = run(None)
    assert torch.equal(run(itself).sequences, exact.sequences)  # neighbourhood {x}: the exact algorithm
    relaxed = run(near)
    assert relaxed.acceptance_rate > exact.acceptance_rate
    with pytest.raises(ValueError, match="relaxed_neighbours"):
        speculative_sample(teacher, draft, prompt[:1], relaxed_neighbours=torch.zeros(3, 2, dtype=torch.long))


def test_plain_loop_equals_generate(pair):
    from hf_specdec.speculative import plain_sample

    teacher, _ = pair
    prompt = teacher.class_prompt([0, 1, 2])
    assert torch.equal(plain_sample(teacher, prompt, do_sample=False), teacher.generate(prompt, do_sample=False))
    assert torch.equal(plain_sample(teacher, prompt, do_sample=False, cfg_scale=2.0),
                       teacher.generate(prompt, do_sample=False, cfg_scale=2.0))
    early = plain_sample(EarlyExitDraft(teacher, 2), prompt, do_sample=False)
    with torch.no_grad():
        logits = teacher(early[:, :-1], num_layers=2, use_cache=False).logits
    assert torch.equal(early[:, 1:], logits.argmax(-1))  # each token is the 2-layer model's argmax


def test_a_global_default_dtype_changes_no_token(pair):
    """`torch.set_default_dtype(torch.float64)` (a scientific user's global) made the statistics fail with an
    index_put dtype error, and the draws would have come from another stream: now the same generator gives the same
    tokens whatever the default dtype, for every verification."""
    teacher, draft = pair
    prompt = teacher.class_prompt([0, 1, 2])

    def draw():
        runs = [speculative_sample(teacher, draft, prompt, gamma=3, generator=torch.Generator().manual_seed(0), **kw)
                for kw in ({}, {"verification": "block"}, {"num_drafts": 2})]
        return [run.sequences for run in runs] + [plain_sample(teacher, prompt, generator=torch.Generator().manual_seed(0))]

    expected = draw()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = draw()
    finally:
        torch.set_default_dtype(default)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
