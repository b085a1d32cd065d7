"""Distillation losses: pure functions over logits, named and cited as in their papers.

All take logits `(..., K)` of the teacher (`p`) and the student (`q`) and return a scalar mean over positions
(positions with `mask == 0` are left out). Temperatures follow Hinton et al. 2015.
"""

import math

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def forward_kl(teacher_logits, student_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """KL(p_T || q_T) = sum_x p(x) (log p(x) - log q(x)): mass-covering (Hinton et al. 2015)."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return _masked_mean((log_p.exp() * (log_p - log_q)).sum(-1), mask)


def reverse_kl(teacher_logits, student_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """KL(q_T || p_T): mode-seeking (Gu et al. 2024, MiniLLM)."""
    return forward_kl(student_logits, teacher_logits, temperature, mask)


def generalized_jsd(teacher_logits, student_logits, beta: float = 0.5, temperature: float = 1.0, mask=None):
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, eq. 3, as in TRL's GKD trainer):
    `beta KL(p || m) + (1 - beta) KL(q || m)` with `m = beta p + (1 - beta) q`. The limits are taken as the
    KLs they approach (up to scale): beta = 0 gives forward KL(p || q), beta = 1 reverse KL(q || p); beta = 0.5
    is the symmetric JSD."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"`beta` must be in [0, 1], got {beta}.")
    if beta == 0.0:
        return forward_kl(teacher_logits, student_logits, temperature, mask)
    if beta == 1.0:
        return reverse_kl(teacher_logits, student_logits, temperature, mask)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return _masked_mean(beta * kl_pm + (1 - beta) * kl_qm, mask)


def total_variation(teacher_logits, student_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """TV(p, q) = 0.5 sum_x |p(x) - q(x)| = 1 - sum_x min(p, q): exactly one minus the speculative acceptance
    alpha (Leviathan et al. 2023), hence the direct training target for a draft (DistillSpec, Zhou et al. 2024)."""
    p = F.softmax(teacher_logits.float() / temperature, dim=-1)
    q = F.softmax(student_logits.float() / temperature, dim=-1)
    return _masked_mean(0.5 * (p - q).abs().sum(-1), mask)


def hybrid_distillation_loss(
    teacher_logits, student_logits, labels, alpha: float = 0.5, temperature: float = 2.0, ignore_index: int = -100
) -> torch.Tensor:
    """The seed's hybrid loss: `alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_T || q_T)`.

    `labels` `(...)` are the hard next-token targets aligned with the logits; `ignore_index` positions are left out
    of both terms. The `T^2` keeps the soft term's gradients on the scale of the hard term (Hinton et al. 2015).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
    mask = labels != ignore_index
    hard = F.cross_entropy(student_logits.flatten(0, -2).float(), labels.flatten(), ignore_index=ignore_index)
    soft = forward_kl(teacher_logits, student_logits, temperature, mask)
    return alpha * hard + (1 - alpha) * temperature**2 * soft


DIVERGENCES = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "tv": total_variation,
}


def divergence(name: str, teacher_logits, student_logits, temperature=1.0, mask=None, beta=0.5) -> torch.Tensor:
    """Dispatch by name: `forward_kl`, `reverse_kl`, `jsd` (with `beta`) or `tv`."""
    if name not in DIVERGENCES:
        raise ValueError(f"`divergence` must be one of {sorted(DIVERGENCES)}, got {name!r}.")
    if name == "jsd":
        return generalized_jsd(teacher_logits, student_logits, beta, temperature, mask)
    return DIVERGENCES[name](teacher_logits, student_logits, temperature, mask)
