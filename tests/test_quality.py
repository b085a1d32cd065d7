"""Quality metrics: FID / IS evaluate modules on classifier features, offline, end to end on tiny models."""

import json

import pytest
import torch

from hf_specdec.data import DataArguments, images_to_tensor
from hf_specdec.metrics.classifier import ClassifierFeatures, DigitsClassifier, accuracy, train_classifier
from hf_specdec.bench.quality import QualityArguments, evaluate_quality
from hf_specdec.metrics.quality import fid_with_ci
from tests.utils import tiny_model, tiny_vq


def test_fid_is_zero_for_identical_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g)
    same, _ = fid_with_ci(real, real.clone(), rounds=2)
    assert same == pytest.approx(0.0, abs=1e-3)
    near, (low, high) = fid_with_ci(real, torch.randn(400, 8, generator=g), rounds=20)
    far, _ = fid_with_ci(real, torch.randn(400, 8, generator=g) + 2.0, rounds=2)
    assert near < far and low <= high
    assert far == pytest.approx(8 * 4.0, rel=0.2)  # ||mu1 - mu2||^2 = 8 dims x 2^2


def test_classifier_learns_digits_and_the_pipeline_runs(tmp_path):
    data = DataArguments(resolution=32)
    splits = data.load()
    x = images_to_tensor(splits["train"][:]["image"], 32)
    y = torch.as_tensor(splits["train"][:]["label"])
    classifier = train_classifier(x, y, epochs=5)
    test_x = images_to_tensor(splits["test"][:]["image"], 32)
    assert accuracy(classifier, test_x, torch.as_tensor(splits["test"][:]["label"])) > 0.8
    classifier.save_pretrained(tmp_path / "classifier")
    (tmp_path / "classifier" / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9}))
    assert isinstance(DigitsClassifier.from_pretrained(tmp_path / "classifier"), DigitsClassifier)
    small = train_classifier(x[:10], y[:10], epochs=2)  # fewer images than the batch: made no step, then torch's
    assert small.config.num_classes == int(y[:10].max()) + 1  # scheduler error naming `total_steps`
    with pytest.raises(ValueError, match="at least 2 training images, got 1"):
        train_classifier(x[:1], y[:1])

    teacher = tiny_model(0, num_hidden_layers=2, codebook_size=16, grid_h=8, grid_w=8, num_classes=10)
    teacher.save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1, codebook_size=16, grid_h=8, grid_w=8, num_classes=10).save_pretrained(tmp_path / "draft-1L")
    tiny_vq().save_pretrained(tmp_path / "vq-tokenizer")
    args = QualityArguments(checkpoints_dir=str(tmp_path), drafts=["draft-1L"], num_images=20, batch_size=10,
                            bootstrap_rounds=5, output_dir=str(tmp_path / "out"), relaxed_neighbours=2)
    summary = evaluate_quality(args, data)
    methods = [r["method"] for r in summary["results"]]
    assert methods[:3] == ["real (train split)", "teacher", "draft-1L alone"] and len(methods) == 5
    real, teacher_row = summary["results"][0], summary["results"][1]
    assert real["fid"] < teacher_row["fid"]  # real digits beat a random tiny model
    for r in summary["results"]:
        assert r["fid_low"] <= r["fid_high"] and r["inception_score"] >= 1.0 - 1e-6
    assert "| teacher |" in (tmp_path / "out" / "results.md").read_text()
    # a teacher alone (e.g. to compare teachers): drafts that are not there are skipped, no speculative rows
    args = QualityArguments(checkpoints_dir=str(tmp_path), drafts=["student-4L"], speculative_draft="none",
                            num_images=20, batch_size=10, bootstrap_rounds=5, output_dir=str(tmp_path / "alone"))
    assert [r["method"] for r in evaluate_quality(args, data)["results"]] == ["real (train split)", "teacher"]
    # a feature-conditioned draft is a speculative draft only: asked to sample alone, refused before any sampling
    from hf_specdec.models import make_feature_draft

    make_feature_draft(teacher).save_pretrained(tmp_path / "feature-1L")
    args = QualityArguments(checkpoints_dir=str(tmp_path), drafts=["feature-1L"], speculative_draft="feature-1L",
                            num_images=20, batch_size=10, bootstrap_rounds=5, output_dir=str(tmp_path / "feature"))
    with pytest.raises(ValueError, match="`drafts` 'feature-1L' is a feature-conditioned draft"):
        evaluate_quality(args, data)
    args = QualityArguments(checkpoints_dir=str(tmp_path), drafts=[], speculative_draft="feature-1L", num_images=20,
                            batch_size=10, bootstrap_rounds=5, output_dir=str(tmp_path / "feature"))
    methods = [r["method"] for r in evaluate_quality(args, data)["results"]]
    assert "speculative (feature-1L, gamma=4)" in methods and methods[-1].startswith("relaxed speculative")


def test_metric_modules_refuse_pixels_nan_and_another_resolution(tmp_path):
    """FID / IS modules took uint8-range pixels (an FID of millions), NaN and images of another size than the
    classifier's without a word; now each is a ValueError naming `predictions` / `references`."""
    from hf_specdec.bench.quality import load_metric

    DigitsClassifier(num_classes=3).save_pretrained(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9, "resolution": 16}))
    fid, inception_score = load_metric("fid"), load_metric("inception_score")
    g = torch.Generator().manual_seed(0)
    images = lambda n, size=16: (torch.rand(n, 3, size, size, generator=g) * 2 - 1).numpy()  # noqa: E731
    assert fid.compute(predictions=images(4), references=images(4), classifier_path=str(tmp_path),
                       bootstrap_rounds=2)["fid"] >= 0
    bad = [(dict(predictions=images(4) * 127.5 + 127.5, references=images(4)), "`predictions` .* values in \\[-1, 1\\]"),
           (dict(predictions=images(4), references=images(4) * float("nan")), "`references` .*NaN"),
           (dict(predictions=images(4, 32), references=images(4, 32)), "`predictions` are 32x32 .* trained at 16x16"),
           (dict(predictions=images(1), references=images(1)), "`predictions` must hold at least 2 images")]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            fid.compute(classifier_path=str(tmp_path), bootstrap_rounds=2, **kwargs)
    with pytest.raises(ValueError, match="`predictions` .* values in"):
        inception_score.compute(predictions=images(4) * 127.5 + 127.5, classifier_path=str(tmp_path), bootstrap_rounds=2)


def test_train_classifier_records_what_it_tells_apart(tmp_path):
    """metrics.json names the dataset, classes and resolution, which evaluate_quality compares with its images."""
    from hf_specdec.bench.quality import check_classifier
    from tests.utils import script_main

    script_main("train_classifier.py")(["--epochs", "1", "--output_dir", str(tmp_path / "classifier")])
    recorded = json.loads((tmp_path / "classifier" / "metrics.json").read_text())
    digits = [str(i) for i in range(10)]
    assert recorded["dataset"] == "digits" and recorded["classes"] == digits and recorded["resolution"] == 32
    check_classifier(str(tmp_path / "classifier"), digits, 32)
    with pytest.raises(ValueError, match="classifier.*classes"):
        check_classifier(str(tmp_path / "classifier"), ["cat"] + digits[1:], 32)
    with pytest.raises(ValueError, match="classifier.*resolution"):
        check_classifier(str(tmp_path / "classifier"), digits, 64)


def test_inception_option_fails_with_guidance_offline():
    """Without torch-fidelity or the Inception weights: a ValueError naming `inception` and saying what to do, from
    `check_inception_available` before any sampling too. With them: finite numbers, and FID near 0 for a set against
    itself."""
    import math

    from hf_specdec.metrics.quality import check_inception_available, inception_metrics

    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    try:
        result = inception_metrics(images, images)
    except ValueError as error:
        assert "`inception` needs torch-fidelity" in str(error) and "run without --inception" in str(error)
        with pytest.raises(ValueError, match="`inception` needs"):
            check_inception_available()
    else:
        assert set(result) == {"inception_fid", "inception_is"}
        assert all(math.isfinite(v) for v in result.values()), result
        assert abs(result["inception_fid"]) < 1.0 and result["inception_is"] >= 1.0 - 1e-6


def test_inception_score_from_the_definition_deterministic_and_splits_of_near_equal_size():
    """IS went through torchmetrics' InceptionScore: rows permuted with the global RNG (another score each call for
    splits > 1, whatever `seed`), `torch.chunk` splits (10 rows in 4 splits: a part of 1 image, which scores 1.0; 9
    rows: 3 parts), and NaN where a class's float32 probability underflowed in every image of a part or resample."""
    import math

    from hf_specdec.metrics.quality import _inception_score, inception_score_with_ci

    def reference(logits, splits):  # Salimans et al.'s code: part i = rows [i N // splits, (i + 1) N // splits)
        log_p, scores = logits.double().log_softmax(1), []
        for i in range(splits):
            part = log_p[i * len(log_p) // splits : (i + 1) * len(log_p) // splits].exp()
            kl = (part * (part.log() - part.mean(0).log())).sum(1).mean()
            scores.append(math.exp(kl))
        return sum(scores) / splits

    g = torch.Generator().manual_seed(0)
    for n, splits in [(400, 10), (10, 4), (9, 4), (14, 4), (50, 1)]:
        logits = torch.randn(n, 10, generator=g) * 3
        torch.manual_seed(1)
        first = _inception_score(logits, splits)
        torch.manual_seed(2)
        assert _inception_score(logits, splits) == first == pytest.approx(reference(logits, splits), rel=1e-12)
    torch.manual_seed(1)
    logits = torch.randn(100, 10, generator=torch.Generator().manual_seed(3))
    a = inception_score_with_ci(logits, splits=10, rounds=5)
    torch.manual_seed(2)
    assert inception_score_with_ci(logits, splits=10, rounds=5) == a
    logits = torch.randn(200, 10, generator=g) * 3
    logits[:, 9] = -150.0  # a class no image makes likely: exp underflows in float32
    value, (low, high) = inception_score_with_ci(logits, rounds=5)
    assert all(math.isfinite(v) for v in (value, low, high)) and low <= value <= high


def test_fid_in_float64_and_without_cancellation_far_from_zero():
    """torchmetrics' one-pass covariance (sum x x^T - n mu mu^T) cancelled for features far from 0 (4.7e-3 relative
    at an offset of 1e6 with unit spread) and float64 features were cast to float32."""
    import numpy as np
    import scipy.linalg

    def reference(x, y):
        x, y = x.double().numpy(), y.double().numpy()
        s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
        root = scipy.linalg.sqrtm(s1 @ s2).real
        return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * root))

    from hf_specdec.metrics.quality import _fid

    g = torch.Generator().manual_seed(0)
    for offset, sd in [(0.0, 1.0), (1e6, 1.0), (1e2, 1e-3)]:
        a = torch.randn(300, 8, generator=g, dtype=torch.float64) * sd + offset
        b = torch.randn(300, 8, generator=g, dtype=torch.float64) * sd * 1.2 + offset
        assert _fid(a, b) == pytest.approx(reference(a, b), rel=1e-8)


def test_classifier_features_stay_in_eval_mode_under_a_parent_train():
    """A torchmetrics FID built on `ClassifierFeatures`, inside a module set to `.train()` (Lightning), ran BatchNorm on
    batch statistics (features depending on the batch) and moved the classifier's running statistics."""
    from torch import nn

    extractor = ClassifierFeatures(DigitsClassifier(num_classes=3))
    nn.ModuleDict({"metric": nn.ModuleDict({"extractor": extractor})}).train()
    assert not extractor.classifier.training
    before = extractor.classifier.body[1].running_mean.clone()
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(extractor(images[:2]), extractor(images)[:2])
    assert torch.equal(extractor.classifier.body[1].running_mean, before)


def test_inception_path_score_is_deterministic():
    """`inception_metrics` read torchmetrics' InceptionScore.compute, which permutes the rows with the global RNG
    before its 10 splits: another `inception_is` on every call. A stand-in network replaces Inception (offline)."""
    from unittest import mock

    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    import hf_specdec.metrics.quality as quality

    class Projection(torch.nn.Module):
        num_features = 10

        def __init__(self):
            super().__init__()
            self.w = torch.randn(3 * 8 * 8, 10, generator=torch.Generator().manual_seed(0))

        def forward(self, x):
            return (x.float().flatten(1) / 255) @ self.w

    def modules():
        return FrechetInceptionDistance(feature=Projection()), InceptionScore(feature=Projection(), splits=10)

    images = torch.rand(95, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with mock.patch.object(quality, "_inception_modules", modules):
        scores = {quality.inception_metrics(images, images.flip(0))["inception_is"] for _ in range(3)}
    assert len(scores) == 1
