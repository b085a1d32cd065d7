"""FID and Inception Score with torchmetrics on custom features, with bootstrap confidence intervals.

Features are extracted once; each bootstrap replicate resamples the feature rows with replacement and recomputes
FID with torchmetrics on an identity "feature extractor" (torchmetrics' own formula); the Inception Score from its
definition (`_inception_score` says why not torchmetrics').
`inception_metrics` gives the standard Inception-feature FID / IS where torch-fidelity's weights are available.
"""

import math

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from ..images import to_uint8
from ..models.configuration_vqgpt import _is_int


class _Identity(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


def _fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    # float64 throughout, both sets shifted by the real mean (FID is invariant to a common shift): torchmetrics
    # accumulates sum(x x^T) - n mu mu^T, which cancels catastrophically for features far from 0, and it returned
    # the dtype of the last update (float32 features: a float32 FID; float64 features were cast to float32 here).
    real, fake = real.double(), fake.double()
    shift = real.mean(dim=0)
    metric = FrechetInceptionDistance(feature=_Identity(real.shape[1]), normalize=True)
    metric.update(real - shift, real=True)
    metric.update(fake - shift, real=False)
    return max(metric.compute().item(), 0.0)  # >= 0 by definition: a set against itself gave -2.6e-06


def _inception_score(logits: torch.Tensor, splits: int) -> float:
    """exp(E_x KL(p(y|x) || p(y))) averaged over `splits` consecutive parts of near-equal size (Salimans et al.'s
    code: part i is rows [i N // splits, (i + 1) N // splits)), in float64 from log-softmax.

    Not torchmetrics' InceptionScore: it permutes the rows with the global torch RNG (a different score on every
    call for splits > 1, whatever `seed`), splits with `torch.chunk` (10 rows in 4 splits gave parts of 3, 3, 3 and
    1 - a part of one scores 1.0 - and 9 rows gave only 3 parts), and takes `log` of the float32 marginal, which is
    0 for a class no image gives a probability above ~1e-45 (logit gaps over ~104): 0 * inf = NaN.
    """
    log_p = logits.double().log_softmax(dim=1)
    n = len(log_p)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = torch.logsumexp(part, dim=0) - math.log(len(part))
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp())
    return torch.stack(scores).mean().item()


def check_bootstrap(rounds, seed, argument: str = "rounds") -> None:
    """`ValueError` naming `argument` unless `rounds` is an integer >= 2 (the interval is the spread of the
    resampled statistic: one resample has none, and the interval was NaN) and `seed` an integer."""
    if not _is_int(rounds) or rounds < 2:
        raise ValueError(f"`{argument}` must be an integer >= 2 (resamples; the interval is their spread), got "
                         f"{rounds!r}.")
    if not _is_int(seed):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")


def check_splits(splits, num_images: int) -> None:
    """`ValueError` naming `splits` unless the Inception Score can split `num_images` into `splits` groups of at
    least 2: with one image per group every image is its own marginal, and any images score the minimum, 1.0."""
    if not _is_int(splits) or splits < 1:
        raise ValueError(f"`splits` must be an integer >= 1, got {splits!r}.")
    if num_images < 2 * splits:
        raise ValueError(f"`splits` {splits} needs at least {2 * splits} images (2 per split: with one, every split "
                         f"scores 1.0 whatever the images), got {num_images}.")


def bootstrap(statistic, *samples: torch.Tensor, rounds: int = 100, seed: int = 0, level: float = 0.95,
              lowest: float = float("-inf")):
    """`(value, (low, high))`: the statistic on the samples and a normal bootstrap interval around it.

    The interval is `value +- z * sd` with `sd` the spread of the statistic over `rounds` (>= 2) resamples with
    replacement, its low end clipped at `lowest`, the least value the statistic can take (FID 0, IS 1: on few images
    the normal approximation reached below, e.g. FID "67.09 (-31.79-165.97)"). A percentile interval would be
    shifted: duplicated rows bias FID upwards, by about as much as the differences measured here. `level` is a
    fraction in (0, 1) (95 gave NaN, 1.0 infinity).
    """
    check_bootstrap(rounds, seed)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"`level` must be a fraction in (0, 1), e.g. 0.95, got {level!r}.")
    for index, sample in enumerate(samples):
        what = f"sample {index} must be a finite 2-D tensor (images x features), got"
        if not isinstance(sample, torch.Tensor) or sample.dim() != 2:
            shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"{what} {shape}.")
        if not torch.isfinite(sample).all():
            raise ValueError(f"{what} {tuple(sample.shape)} with NaN or infinite values.")
        if len(sample) < 2:  # a covariance (FID) or a spread of resamples needs two rows
            raise ValueError(f"sample {index} has {len(sample)} row(s): the statistic needs at least 2 images.")
    if len({sample.shape[1] for sample in samples}) > 1:
        raise ValueError(f"The samples have features of different widths {[s.shape[1] for s in samples]}: compare "
                         "features of one classifier.")
    value = statistic(*samples)
    if not math.isfinite(value):
        largest = max(sample.abs().max().item() for sample in samples)
        raise ValueError(f"the statistic is {value} on these features (largest magnitude {largest:.3g}): it overflowed; "
                         "pass features on a classifier's scale (e.g. its penultimate activations).")
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(rounds):
        resampled = [s[torch.randint(len(s), (len(s),), generator=g)] for s in samples]
        draws.append(statistic(*resampled))
    sd = torch.tensor(draws, dtype=torch.float64).std().item()  # float32 turned an FID past 3e38 into inf
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)).item()
    return value, (max(value - z * sd, lowest), value + z * sd)


def fid_with_ci(real_features: torch.Tensor, fake_features: torch.Tensor, rounds: int = 100, seed: int = 0):
    return bootstrap(_fid, real_features, fake_features, rounds=rounds, seed=seed, lowest=0.0)


def inception_score_with_ci(logits: torch.Tensor, splits: int = 1, rounds: int = 100, seed: int = 0):
    check_splits(splits, len(logits))
    return bootstrap(lambda x: _inception_score(x, splits), logits, rounds=rounds, seed=seed, lowest=1.0)


def _inception_modules():
    try:
        return FrechetInceptionDistance(feature=2048), InceptionScore()
    except Exception as error:  # missing package, or no network for the weights
        raise ValueError(
            f"`inception` needs torch-fidelity and the Inception weights ({type(error).__name__}: {error}); "
            "run without --inception to use the offline classifier's features."
        ) from error


def check_inception_available() -> None:
    """`ValueError` naming `inception` unless torchmetrics' Inception networks can be built here (torch-fidelity and
    its weights): checked before any sampling, since the metrics are computed after it."""
    _inception_modules()


def inception_metrics(images: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
    """Standard FID / IS with torchmetrics' Inception-v3 features (downloads torch-fidelity's weights once)."""
    fid, score = _inception_modules()
    fid.update(to_uint8(references), real=True)
    fid.update(to_uint8(images), real=False)
    score.update(to_uint8(images))
    # torchmetrics' own compute permutes the rows with the global RNG before its 10 splits (another IS every call):
    # the Inception logits it stored go through the same deterministic formula as the classifier's
    logits = torch.cat([torch.atleast_2d(f) for f in score.features])
    return {"inception_fid": fid.compute().item(), "inception_is": _inception_score(logits, score.splits)}
