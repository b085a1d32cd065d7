"""The speed-vs-model-size benchmark: runs on the CPU at the digits size, and its prediction is the formula's."""

import json

import pytest

from hf_specdec.bench.model_size import ModelSizeArguments, expected_tokens, run_model_size_benchmark


def test_model_size_benchmark_runs_and_predicts_with_the_formula(tmp_path):
    args = ModelSizeArguments(sizes=["digits-12x128"], draft_layers=[1], gammas=[2, 4], batch_sizes=[1], repeats=2,
                              output_dir=str(tmp_path))
    result = run_model_size_benchmark(args)
    (record,) = result["records"]
    assert record["parameters"] > 2e6 and record["teacher_step_s"] > 0
    best = max(expected_tokens(0.88, g) * record["teacher_step_s"] / (g * record["draft_step_s"][1] + record["verify_s"][g])
               for g in (2, 4))
    assert record["prediction"][1]["predicted_speedup"] == pytest.approx(best)
    assert json.loads((tmp_path / "results.json").read_text())["records"][0]["size"] == "digits-12x128"
    assert (tmp_path / "speed_vs_size.png").stat().st_size > 0 and "PREDICTED" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="sizes"):
        ModelSizeArguments(sizes=["huge"])
