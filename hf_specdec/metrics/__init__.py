"""Metrics only: the digits classifier that stands in for Inception (`classifier.py`), FID / IS with bootstrap
intervals (`quality.py`), and the same as 🤗 `evaluate` modules (`fid/`, `inception_score/`, via `load_metric`).
The experiment that scores every sampling method with them is an application: `hf_specdec.bench.quality`."""

import os

METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


def load_metric(name: str):
    """The `evaluate` module `name` (`"fid"` or `"inception_score"`) of this folder."""
    import evaluate  # only where a metric is loaded: `evaluate` imports `datasets`

    return evaluate.load(os.path.join(METRICS_DIR, name))
