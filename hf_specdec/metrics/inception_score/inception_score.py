"""Inception Score on a classifier's posteriors, as an `evaluate` metric: `evaluate.load(<this folder>)`."""

import datasets
import evaluate

from hf_specdec.metrics.classifier import ClassifierFeatures, metric_images
from hf_specdec.metrics.quality import check_bootstrap, check_splits, inception_score_with_ci

_DESCRIPTION = """Inception Score (Salimans et al. 2016) of generated `predictions`, images (3, H, W) in [-1, 1],
with the class posteriors of `classifier_path` (a DigitsClassifier) in place of Inception's, computed from the
definition in float64 (`hf_specdec.metrics.quality._inception_score`), with a 95% normal bootstrap interval:
`IS +- 1.96 sd`, `sd` the spread of IS over `bootstrap_rounds` resamples with replacement
(`hf_specdec.metrics.quality.bootstrap` says why not percentiles)."""

_KWARGS = """
Args:
    predictions: generated images, each (3, H, W) in [-1, 1].
    classifier_path: folder of a saved DigitsClassifier.
    splits: consecutive parts of near-equal size, scores averaged (1 = the score over all images).
    bootstrap_rounds: resamples for the interval (an integer >= 2).
Returns:
    inception_score, inception_score_low, inception_score_high
"""


class InceptionScoreMetric(evaluate.Metric):
    def _info(self):
        image = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32"))))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Salimans et al. 2016, Improved Techniques for Training GANs",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": image}),
        )

    def _compute(self, predictions, classifier_path, splits=1, bootstrap_rounds=100, seed=0):
        check_bootstrap(bootstrap_rounds, seed, "bootstrap_rounds")  # before the features are extracted
        predictions = metric_images(predictions, "predictions", classifier_path)
        check_splits(splits, len(predictions))
        extractor = ClassifierFeatures.from_pretrained(classifier_path, "logits")
        logits = extractor((predictions + 1) / 2)
        value, (low, high) = inception_score_with_ci(logits, splits=splits, rounds=bootstrap_rounds, seed=seed)
        return {"inception_score": value, "inception_score_low": low, "inception_score_high": high}
