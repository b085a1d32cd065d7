"""Frechet distance on a classifier's features, as an `evaluate` metric: `evaluate.load(<this folder>)`."""

import datasets
import evaluate

from hf_specdec.metrics.classifier import ClassifierFeatures, metric_images
from hf_specdec.metrics.quality import check_bootstrap, fid_with_ci

_DESCRIPTION = """FID (Heusel et al. 2017) between generated `predictions` and real `references`, images (3, H, W)
in [-1, 1], on the penultimate features of `classifier_path` (a DigitsClassifier), computed with torchmetrics'
FrechetInceptionDistance, with a 95% normal bootstrap interval: `fid +- 1.96 sd`, `sd` the spread of FID over
`bootstrap_rounds` resamples with replacement (`hf_specdec.metrics.quality.bootstrap` says why not percentiles)."""

_KWARGS = """
Args:
    predictions: generated images, each (3, H, W) in [-1, 1].
    references: real images, each (3, H, W) in [-1, 1]; as many as `predictions` (evaluate pairs them row by row:
        for sets of other sizes use `hf_specdec.metrics.quality.fid_with_ci` on `ClassifierFeatures`).
    classifier_path: folder of a saved DigitsClassifier.
    bootstrap_rounds: resamples for the interval (an integer >= 2).
Returns:
    fid, fid_low, fid_high
"""


class FID(evaluate.Metric):
    def _info(self):
        image = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32"))))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Heusel et al. 2017, GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
            inputs_description=_KWARGS,
            # evaluate pairs the features row by row: as many references as predictions (a keyword of another name
            # could differ in size, but `references` is the name every evaluate metric gives the real data)
            features=datasets.Features({"predictions": image, "references": image}),
        )

    def _compute(self, predictions, references, classifier_path=None, bootstrap_rounds=100, seed=0):
        if classifier_path is None:  # a TypeError naming `_compute`'s positional argument
            raise ValueError("`classifier_path` is required: FID is computed on the features of the classifier in that "
                             "folder (`scripts/train_classifier.py` writes one).")
        check_bootstrap(bootstrap_rounds, seed, "bootstrap_rounds")  # before the features are extracted
        predictions = metric_images(predictions, "predictions", classifier_path, minimum=2)  # a covariance each
        references = metric_images(references, "references", classifier_path, minimum=2)
        extractor = ClassifierFeatures.from_pretrained(classifier_path, "features")
        fake = extractor((predictions + 1) / 2)
        real = extractor((references + 1) / 2)
        value, (low, high) = fid_with_ci(real, fake, rounds=bootstrap_rounds, seed=seed)
        return {"fid": value, "fid_low": low, "fid_high": high}
