"""Distillation losses: properties that must hold for any input."""

import pytest
import torch

from hf_specdec.distill.losses import (
    divergence,
    forward_kl,
    generalized_jsd,
    hybrid_distillation_loss,
    reverse_kl,
    total_variation,
)
from hf_specdec.speculative import acceptance_alpha


def logits(seed, shape=(4, 6, 11), scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "tv"])
def test_zero_for_identical_and_positive_otherwise(name):
    for seed in range(5):
        a, b = logits(seed), logits(seed + 100)
        assert divergence(name, a, a).item() == pytest.approx(0.0, abs=1e-6)
        assert divergence(name, a, b).item() > 1e-4
        assert divergence(name, a, a + 7.0).item() == pytest.approx(0.0, abs=1e-5)  # shift-invariant logits


def test_kl_nonnegative_and_asymmetric():
    for seed in range(10):
        a, b = logits(seed), logits(seed + 50)
        assert forward_kl(a, b) >= 0 and reverse_kl(a, b) >= 0
        assert torch.isclose(forward_kl(a, b), reverse_kl(b, a))
    assert not torch.isclose(forward_kl(logits(1), logits(2)), reverse_kl(logits(1), logits(2)))


def test_jsd_symmetric_at_half_bounded_and_limits():
    a, b = logits(3), logits(4)
    assert torch.isclose(generalized_jsd(a, b, 0.5), generalized_jsd(b, a, 0.5), atol=1e-6)
    assert generalized_jsd(a, b, 0.5) <= torch.log(torch.tensor(2.0)) + 1e-6
    assert torch.isclose(generalized_jsd(a, b, 0.0), forward_kl(a, b))
    assert torch.isclose(generalized_jsd(a, b, 1.0), reverse_kl(a, b))
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(a, b, 1.5)


def test_tv_in_unit_interval_and_one_minus_alpha():
    for seed in range(10):
        a, b = logits(seed, scale=10.0), logits(seed + 7, scale=10.0)
        tv = total_variation(a, b)
        assert 0.0 <= tv <= 1.0
        alpha = acceptance_alpha(a.softmax(-1), b.softmax(-1)).mean()
        assert torch.isclose(tv, 1 - alpha, atol=1e-6)
    one_hot_a = torch.tensor([[100.0, 0.0]])
    one_hot_b = torch.tensor([[0.0, 100.0]])
    assert total_variation(one_hot_a, one_hot_b).item() == pytest.approx(1.0)


def test_mask_excludes_positions():
    a, b = logits(0), logits(1)
    mask = torch.zeros(4, 6)
    mask[:, :2] = 1
    assert torch.isclose(forward_kl(a, b, mask=mask), forward_kl(a[:, :2], b[:, :2]))


def test_hybrid_loss_is_the_seed_formula():
    teacher, student = logits(0), logits(1)
    labels = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(0))
    labels[0, 0] = -100
    T, alpha = 2.0, 0.3
    mask = labels != -100
    ce = torch.nn.functional.cross_entropy(student[mask], labels[mask])
    p = (teacher[mask] / T).softmax(-1)
    kl = (p * (p.log() - (student[mask] / T).log_softmax(-1))).sum(-1).mean()
    expected = alpha * ce + (1 - alpha) * T**2 * kl
    assert torch.isclose(hybrid_distillation_loss(teacher, student, labels, alpha, T), expected, atol=1e-5)
    assert torch.isclose(hybrid_distillation_loss(teacher, student, labels, 1.0, T), ce)
    with pytest.raises(ValueError, match="alpha"):
        hybrid_distillation_loss(teacher, student, labels, alpha=2.0)
    with pytest.raises(ValueError, match="divergence"):
        divergence("kl", teacher, student)


def test_gradients_flow_to_the_student_only_through_student_logits():
    teacher, student = logits(0), logits(1).requires_grad_(True)
    for name in ("forward_kl", "reverse_kl", "jsd", "tv"):
        student.grad = None
        divergence(name, teacher, student).backward()
        assert student.grad is not None and student.grad.abs().sum() > 0


def test_predictive_entropy_is_log_k_for_a_uniform_model_and_drops_with_sharper_logits():
    from hf_specdec.distill.distill import predictive_entropy
    from tests.conftest import tiny_model

    model = tiny_model(0)
    sequences = torch.randint(0, model.config.codebook_size, (5, 1 + 16))
    sequences[:, 0] = model.config.codebook_size
    with torch.no_grad():
        model.lm_head.weight.zero_()
    assert predictive_entropy(model, sequences) == pytest.approx(torch.log(torch.tensor(16.0)).item(), rel=1e-5)
    sharp = tiny_model(0)  # lm_head scaled up: peaked distributions
    assert 0.0 < predictive_entropy(sharp, sequences, batch_size=2) < 0.9 * torch.log(torch.tensor(16.0)).item()
    assert predictive_entropy(sharp, sequences, temperature=0.5) < predictive_entropy(sharp, sequences)
