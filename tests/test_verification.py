"""Block verification (Sun et al. 2025) and multi-draft verification (SpecInfer): the paper's example, exactness on
context-free models and on real ones (with a control that the same test catches a wrong rule), never fewer tokens
than token-wise verification, k = 1 chain is token-wise verification."""

import pytest
import torch

import hf_specdec.speculative.sampling as sampling
from hf_specdec import speculative_sample
from hf_specdec.speculative import block_accept, clear_decoders, multi_draft_accept, speculative_accept
from tests.conftest import tiny_model
from tests.test_speculative import SMALL, empirical_distribution, exact_distribution, small_pair, tv_bound

M_B = torch.tensor([1 / 3, 2 / 3])  # the paper's context-free example: target
M_S = torch.tensor([2 / 3, 1 / 3])  # draft


def draw_block(q, N, gamma, g):
    return torch.multinomial(q.expand(N * gamma, len(q)), 1, replacement=True, generator=g).view(N, gamma)


def test_the_papers_example_accepts_11_9_tokens_where_token_wise_accepts_10_9():
    g = torch.Generator().manual_seed(0)
    N, gamma = 400_000, 2
    x = draw_block(M_S, N, gamma, g)
    p, q = M_B.expand(N, gamma + 1, 2), M_S.expand(N, gamma, 2)
    tau, _ = block_accept(p, q, x, g)
    n, _ = speculative_accept(p, q, x, g)
    assert tau.float().mean().item() == pytest.approx(11 / 9, abs=0.01)
    assert n.float().mean().item() == pytest.approx(10 / 9, abs=0.01)


def wrong_block_accept(p, q, draft_tokens, generator=None, eta=None, exponentials=None, lengths=None):
    """A plausible bug: keep the leading run of passing drafts (as token-wise verification does) instead of the
    last draft that passes. Not lossless."""
    p_block, h = sampling.block_weights(p, q, draft_tokens, lengths)
    if eta is None:
        eta = torch.rand(h.shape, generator=generator)
    tau = (eta <= h).long().cumprod(dim=1).sum(dim=1)
    return tau, sampling.sample_block_residual(p, q, p_block, tau, generator, exponentials, lengths)


def test_a_row_s_block_of_fewer_drafts_is_verified_as_a_shorter_block():
    """`lengths`: the same tau and next token as a call on each row's first drafts alone (same draws), whatever
    `p`, `q` and drafts follow them."""
    g = torch.Generator().manual_seed(0)
    B, gamma, K = 4000, 5, 4
    p = torch.rand(B, gamma + 1, K, generator=g).pow(3)
    q = torch.rand(B, gamma, K, generator=g).pow(3)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    drafts = torch.multinomial(q.view(-1, K), 1, generator=g).view(B, gamma)
    lengths = torch.randint(0, gamma + 1, (B,), generator=g)
    eta = torch.rand(B, gamma, generator=g)
    exponentials = -torch.rand(B, K, generator=g).log()
    after = torch.arange(gamma + 1) > lengths[:, None]  # garbage after each row's block (and its next-token p)
    p_garbage = torch.where(after[..., None], torch.rand(B, gamma + 1, K, generator=g).softmax(-1), p)
    q_garbage = torch.where(after[:, 1:, None], torch.rand(B, gamma, K, generator=g).softmax(-1), q)
    d_garbage = torch.where(after[:, 1:], torch.randint(0, K, (B, gamma), generator=g), drafts)
    tau, token = block_accept(p_garbage, q_garbage, d_garbage, eta=eta, exponentials=exponentials, lengths=lengths)
    assert (tau <= lengths).all() and (tau[lengths == 0] == 0).all()
    for m in range(1, gamma + 1):
        rows = lengths == m
        want_tau, want_token = block_accept(p[rows, : m + 1], q[rows, :m], drafts[rows, :m], eta=eta[rows, :m],
                                            exponentials=exponentials[rows])
        assert torch.equal(tau[rows], want_tau) and torch.equal(token[rows], want_token), m
    full = lengths == gamma  # and `lengths` of gamma is the default
    assert torch.equal(block_accept(p[full], q[full], drafts[full], eta=eta[full], exponentials=exponentials[full])[0],
                       tau[full])


def test_block_verification_is_exact_where_drafts_run_past_the_grid():
    """The last token of an image, one left and gamma 2: the second draft lies past the grid and shares the last
    cache slot with the first, so the teacher's `p` after the first draft read the second; block verification's
    weight for the first draft read that `p` (TV 0.0098 from the teacher at 200,000 samples, chi-square p 1e-27)."""
    from scipy.stats import chisquare

    from hf_specdec.models import VQGPTConfig, VQGPTForCausalLM

    def peaked(seed, layers):
        torch.manual_seed(seed)
        model = VQGPTForCausalLM(VQGPTConfig(codebook_size=4, num_classes=2, grid_h=1, grid_w=3, hidden_size=32,
                                             num_hidden_layers=layers, num_attention_heads=4, dropout=0.0)).eval()
        with torch.no_grad():
            model.lm_head.weight.mul_(12.0)
        return model

    teacher, draft, N = peaked(0, 3), peaked(7, 1), 100_000
    prefix = torch.tensor([[4 + 1, 1, 1]])
    with torch.no_grad():
        p = teacher(prefix, use_cache=False).logits[0, -1].double().softmax(-1)
    out = speculative_sample(teacher, draft, prefix.expand(N, -1).contiguous(), gamma=2, verification="block",
                             generator=torch.Generator().manual_seed(5))
    counts = torch.bincount(out.sequences[:, 3], minlength=4).double()
    assert chisquare(counts.numpy(), (p * N).numpy()).pvalue > 1e-4


def context_free_outputs(accept, Mb, Ms, gamma, N, length, g):
    """The first `length` tokens of N sequences decoded round after round with context-free models `Mb`, `Ms`
    (every round yields at least one token, so `length` rounds are enough)."""
    tokens, kept = [], []
    for _ in range(length):
        x = draw_block(Ms, N, gamma, g)
        tau, y = accept(Mb.expand(N, gamma + 1, len(Mb)), Ms.expand(N, gamma, len(Ms)), x, g)
        produced = torch.cat([x, y[:, None]], dim=1).scatter(1, tau[:, None], y[:, None])  # drafts up to tau, then y
        tokens.append(produced)
        kept.append(torch.arange(gamma + 1) <= tau[:, None])
    tokens, kept = torch.cat(tokens, dim=1), torch.cat(kept, dim=1)
    order = torch.argsort((~kept).long(), dim=1, stable=True)  # each row's kept tokens first, in order
    return tokens.gather(1, order)[:, :length]


@pytest.mark.parametrize("gamma", [2, 3])
def test_block_verification_is_exact_on_context_free_models(gamma):
    g = torch.Generator().manual_seed(gamma)
    Mb, Ms = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.1, 0.6, 0.3])
    N, length, K = 30_000, 3, 3
    target = (Mb[:, None, None] * Mb[None, :, None] * Mb[None, None, :]).flatten()  # i.i.d. Mb
    bound = tv_bound(K**length, N)
    tv = lambda samples: 0.5 * (empirical_distribution(samples, K) - target).abs().sum().item()  # noqa: E731
    assert tv(context_free_outputs(block_accept, Mb, Ms, gamma, N, length, g)) < bound
    assert tv(context_free_outputs(wrong_block_accept, Mb, Ms, gamma, N, length, g)) > bound


def test_block_verification_never_accepts_fewer_tokens():
    teacher, draft = tiny_model(0, num_hidden_layers=4), tiny_model(1, num_hidden_layers=1)
    with torch.no_grad():  # a draft close enough to the teacher that several drafts are accepted per round
        draft.lm_head.weight.mul_(0.05)
        teacher.lm_head.weight.mul_(0.05)
    prompt = teacher.class_prompt(torch.arange(600) % 3)
    runs = {
        rule: speculative_sample(teacher, draft, prompt, gamma=6, verification=rule,
                                 generator=torch.Generator().manual_seed(1))
        for rule in ("token", "block")
    }
    accepted = {rule: out.accepted_per_round.sum().item() / out.num_rounds for rule, out in runs.items()}
    assert accepted["block"] > accepted["token"]
    assert runs["block"].tokens_per_teacher_call >= runs["token"].tokens_per_teacher_call


def test_greedy_ignores_the_verification_rule_and_bad_values_are_refused():
    teacher, draft = tiny_model(0, num_hidden_layers=4), tiny_model(1, num_hidden_layers=1)
    prompt = teacher.class_prompt([0, 1, 2])
    out = speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False, verification="block")
    assert torch.equal(out.sequences, teacher.generate(prompt, do_sample=False))
    with pytest.raises(ValueError, match="verification"):
        speculative_sample(teacher, draft, prompt, verification="tree")


# -- multi-draft verification (SpecInfer's multi-step speculative sampling over k independent chains) -------------

def no_residual_multi_draft_accept(p, q, draft_tokens, generator=None, r=None, exponentials=None, candidates=None):
    """A plausible bug: test every candidate against `p` itself (accept if any passes min(1, p/q)), without
    shrinking the residual after a rejection. Not lossless: tokens that the draft over-proposes win too often."""
    B, k, gamma = draft_tokens.shape
    if r is None:
        r = torch.rand(B, k, gamma, generator=generator)
    p_x = p[:, :, :gamma].gather(-1, draft_tokens[..., None]).squeeze(-1)
    q_x = q.gather(-1, draft_tokens[..., None]).squeeze(-1)
    passes = r * q_x < p_x  # (B, k, gamma)
    run = passes.long().cumprod(dim=2).sum(dim=2)  # each chain's own leading run
    n, chain = run.max(dim=1)
    return n, chain, sampling.sample_residual(p[:, 0], q[:, 0], n, generator, exponentials)


def context_free_multi_outputs(accept, Mb, Ms, k, gamma, N, length, g):
    """`context_free_outputs` for `k` chains per row: each round keeps the chosen chain's first `n` drafts."""
    tokens, kept = [], []
    K = len(Mb)
    for _ in range(length):
        x = draw_block(Ms, N * k, gamma, g).view(N, k, gamma)
        n, chain, y = accept(Mb.expand(N, k, gamma + 1, K), Ms.expand(N, k, gamma, K), x, g)
        produced = torch.cat([x[torch.arange(N), chain], y[:, None]], dim=1).scatter(1, n[:, None], y[:, None])
        tokens.append(produced)
        kept.append(torch.arange(gamma + 1) <= n[:, None])
    tokens, kept = torch.cat(tokens, dim=1), torch.cat(kept, dim=1)
    order = torch.argsort((~kept).long(), dim=1, stable=True)
    return tokens.gather(1, order)[:, :length]


@pytest.mark.parametrize("k,gamma", [(2, 2), (3, 3)])
def test_multi_draft_verification_is_exact_on_context_free_models(k, gamma):
    g = torch.Generator().manual_seed(10 * k + gamma)
    Mb, Ms = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.1, 0.6, 0.3])
    N, length, K = 30_000, 3, 3
    target = (Mb[:, None, None] * Mb[None, :, None] * Mb[None, None, :]).flatten()
    bound = tv_bound(K**length, N)
    tv = lambda samples: 0.5 * (empirical_distribution(samples, K) - target).abs().sum().item()  # noqa: E731
    assert tv(context_free_multi_outputs(multi_draft_accept, Mb, Ms, k, gamma, N, length, g)) < bound
    assert tv(context_free_multi_outputs(no_residual_multi_draft_accept, Mb, Ms, k, gamma, N, length, g)) > bound


def test_one_chain_is_token_wise_verification_and_more_chains_accept_more():
    g = torch.Generator().manual_seed(3)
    B, gamma, K = 2000, 4, 6
    p = torch.rand(B, gamma + 1, K, generator=g).pow(3).softmax(-1)
    q = torch.rand(B, gamma, K, generator=g).pow(3).softmax(-1)
    x = torch.multinomial(q.view(-1, K), 1, generator=g).view(B, gamma)
    r, e = torch.rand(B, gamma, generator=g), torch.empty(B, K).exponential_(generator=g)
    n, chain, y = multi_draft_accept(p[:, None], q[:, None], x[:, None], r=r[:, None], exponentials=e)
    n1, y1 = speculative_accept(p, q, x, r=r, exponentials=e)
    assert torch.equal(n, n1) and torch.equal(y, y1) and not chain.any()
    # context-free rows (the same p and q at every depth): a second chain can only help at each depth
    Mb, Ms = torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.1, 0.2, 0.3, 0.4])
    accepted = {}
    for k in (1, 3):
        x = draw_block(Ms, 50_000 * k, gamma, g).view(50_000, k, gamma)
        n, _, _ = multi_draft_accept(Mb.expand(50_000, k, gamma + 1, 4), Ms.expand(50_000, k, gamma, 4), x, g)
        accepted[k] = n.float().mean().item()
    assert accepted[3] > accepted[1] + 0.2


def every_chain_a_candidate(p, q, draft_tokens, generator=None, r=None, exponentials=None, candidates=None):
    """A plausible tree bug: test every chain's token, so a tree node's one draw is tested once per chain below it.
    Not lossless: a node's token gets several chances."""
    return multi_draft_accept(p, q, draft_tokens, generator, r, exponentials)  # the original: candidates ignored


# -- the rules on a real (tiny) teacher -------------------------------------------------------------------------

RULES = {  # decoding options, the sampling function they use, and a plausible wrong version of it
    "block": ({"gamma": 2, "verification": "block"}, "block_accept", wrong_block_accept),
    "multi-draft": ({"gamma": 2, "num_drafts": 2}, "multi_draft_accept", no_residual_multi_draft_accept),
    "tree": ({"gamma": 2, "num_drafts": 2, "tree_depth": 2}, "multi_draft_accept", every_chain_a_candidate),
}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize(
    "processing", [{}, {"cfg_scale": 2.0}, {"temperature": 0.7, "top_k": 3}], ids=["plain", "cfg", "temp-topk"]
)
def test_verification_rule_samples_the_teacher_and_the_test_catches_a_wrong_rule(rule, processing, monkeypatch):
    options, function, wrong = RULES[rule]
    teacher, draft = small_pair()
    N, label, K = 40_000, 1, SMALL["codebook_size"]
    _, exact = exact_distribution(teacher, label, processing, 3)
    bound = tv_bound(len(exact), N)
    prompt = teacher.class_prompt([label] * N)

    def tv():
        out = speculative_sample(teacher, draft, prompt, generator=torch.Generator().manual_seed(0), **options,
                                 **processing)
        return 0.5 * (empirical_distribution(out.sequences[:, 1:], K) - exact).abs().sum().item()

    assert tv() < bound
    monkeypatch.setattr(sampling, function, wrong)
    clear_decoders()
    assert tv() > bound


def test_multi_draft_greedy_equals_the_teacher_and_more_chains_accept_more_drafts():
    teacher, draft = tiny_model(0, num_hidden_layers=4), tiny_model(1, num_hidden_layers=1)
    prompt = teacher.class_prompt([0, 1, 2])
    out = speculative_sample(teacher, draft, prompt, gamma=3, do_sample=False, num_drafts=2)
    assert torch.equal(out.sequences, teacher.generate(prompt, do_sample=False))
    with torch.no_grad():  # a draft close enough to the teacher that several drafts are accepted per round
        draft.lm_head.weight.mul_(0.05)
        teacher.lm_head.weight.mul_(0.05)
    prompt = teacher.class_prompt(torch.arange(300) % 3)
    accepted = {k: speculative_sample(teacher, draft, prompt, gamma=6, num_drafts=k,
                                      generator=torch.Generator().manual_seed(1)).acceptance_rate for k in (1, 3)}
    assert accepted[3] > accepted[1]


@pytest.mark.parametrize("settings,message", [
    ({"num_drafts": 0}, "`num_drafts` must be an integer in \\[1, 16\\]"),
    ({"num_drafts": 2.0}, "`num_drafts` must be an integer"),
    ({"num_drafts": 2, "verification": "block"}, "`num_drafts` > 1 needs `verification='token'`"),
    ({"num_drafts": 4, "tree_depth": 4}, "`num_drafts \\*\\* tree_depth` <= 64 chains"),
    ({"num_drafts": 2, "tree_depth": 0}, "`tree_depth` must be an integer >= 1"),
    ({"tree_depth": 2}, "`tree_depth` 2 branches among `num_drafts` candidates: it needs `num_drafts` >= 2"),  # ignored
])
def test_bad_num_drafts_are_refused(settings, message):
    teacher, draft = tiny_model(0, num_hidden_layers=2), tiny_model(1, num_hidden_layers=1)
    with pytest.raises(ValueError, match=message):
        speculative_sample(teacher, draft, teacher.class_prompt([0]), gamma=2, **settings)
