"""The benchmark runs end to end on tiny saved models and writes consistent records and pictures."""

import json

import pytest
import torch
from PIL import Image

from hf_specdec.bench.paired import paired_benchmark
from hf_specdec.bench.speed import BenchmarkArguments, run_benchmark
from hf_specdec.models import make_feature_draft
from tests.utils import script_main, tiny_model, tiny_vq


def test_quick_benchmark_on_tiny_models(tmp_path):
    teacher = tiny_model(0, num_hidden_layers=3, codebook_size=16, grid_h=8, grid_w=8)
    teacher.save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1, codebook_size=16, grid_h=8, grid_w=8).save_pretrained(tmp_path / "draft-1L")
    tiny_vq().save_pretrained(tmp_path / "vq-tokenizer")
    args = BenchmarkArguments(checkpoints_dir=str(tmp_path), drafts=["draft-1L", "missing"], gammas=[2, 4],
                              batch_sizes=[1, 3], repeats=1, warmup=1, output_dir=str(tmp_path / "out"),
                              adaptive_gamma_max=4)
    with pytest.raises(ValueError, match="`drafts` 'missing' is neither a folder"):  # a typo: refused before timing
        run_benchmark(args)
    args.drafts = ["draft-1L", "student-4L"]  # a size preset not trained yet: skipped with a note
    with pytest.warns(UserWarning, match="skipped draft 'student-4L'"):
        result = run_benchmark(args)
    records = result["records"]
    assert any("student-4L" in note for note in result["notes"])
    methods = {r["method"] for r in records}
    assert methods == {"teacher-hf-generate", "teacher-plain", "draft-alone", "hf-assisted", "speculative",
                       "speculative-adaptive"}
    assert not any(r["method"] == "hf-assisted" and r["batch_size"] != 1 for r in records)
    for r in records:
        assert r["latency_p25_ms"] <= r["latency_per_image_ms"] <= r["latency_p75_ms"]
        assert r["speedup"] > 0
        if r["method"].startswith("speculative"):
            assert 0.0 <= r["alpha"] <= 1.0 and r["tokens_per_teacher_call"] >= 1.0
            assert r["predicted_speedup"] > 0
    fastest_plain = [r for r in records if r["method"] in ("teacher-plain", "teacher-hf-generate") and r["batch_size"] == 1]
    assert max(r["speedup"] for r in fastest_plain) == pytest.approx(1.0)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["records"]) == len(records)
    assert "| speculative |" in (tmp_path / "out" / "results.md").read_text()
    for name in ("speedup_vs_gamma.png", "alpha_heatmap.png", "alpha_vs_draft_size.png"):
        with Image.open(tmp_path / "out" / name) as picture:
            assert picture.size[0] > 100
    assert list((tmp_path / "out" / "samples").glob("speculative-*.png"))


def test_benchmark_arguments_are_checked():
    with pytest.raises(ValueError, match="gammas"):
        BenchmarkArguments(gammas=[0])
    with pytest.raises(ValueError, match=r"`warmup` must be >= 1 \(the first call"):  # compiling would be timed
        BenchmarkArguments(warmup=0)
    quick = BenchmarkArguments(quick=True)
    assert quick.repeats <= 3 and len(quick.drafts) == 2 and quick.batch_sizes == [1, 16]


def test_paired_benchmark_interleaves_every_method(tmp_path):
    teacher = tiny_model(0, num_hidden_layers=3, codebook_size=16, grid_h=4, grid_w=4)
    teacher.save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1, codebook_size=16, grid_h=4, grid_w=4).save_pretrained(tmp_path / "draft")
    make_feature_draft(teacher, 1).save_pretrained(tmp_path / "feature")  # loaded with its teacher
    drafts = {"d": str(tmp_path / "draft"), "f": str(tmp_path / "feature")}
    result = paired_benchmark("cpu", 2, drafts, teacher_path=str(tmp_path / "teacher"))
    rows = result["results"]
    assert set(rows) == {"plain", "d g6", "d g8", "d adaptive", "f g6", "f g8", "f adaptive"}
    assert rows["plain"]["speedup_vs_plain"] == 1.0 and rows["plain"]["alpha"] is None
    for name in ("d g6", "d g8", "d adaptive", "f g6", "f g8", "f adaptive"):
        assert rows[name]["median_ms"] > 0 and 0.0 <= rows[name]["alpha"] <= 1.0


def test_paired_benchmark_times_another_dtype_in_the_same_run(tmp_path, monkeypatch):
    import hf_specdec.bench.paired as paired

    teacher = tiny_model(0, num_hidden_layers=2, codebook_size=16, grid_h=4, grid_w=4)
    teacher.save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1, codebook_size=16, grid_h=4, grid_w=4).save_pretrained(tmp_path / "draft")
    make_feature_draft(teacher, 1).save_pretrained(tmp_path / "feature")
    built = []

    class RecordingDecoder(paired.SpeculativeDecoder):
        def __init__(self, teacher, draft, *args, **kwargs):
            super().__init__(teacher, draft, *args, **kwargs)
            built.append((teacher, draft))

    monkeypatch.setattr(paired, "SpeculativeDecoder", RecordingDecoder)
    drafts = {"d": str(tmp_path / "draft"), "f": str(tmp_path / "feature")}
    result = paired.paired_benchmark("cpu", 1, drafts, str(tmp_path / "teacher"), block_gamma=3, gammas=(2,),
                                     also_dtype="bfloat16")
    rows = result["results"]
    assert {"plain bfloat16", "d block g3 bfloat16", "d g2 bfloat16", "f block g3 bfloat16", "f g2 bfloat16"} <= set(rows)
    assert 0.0 <= rows["f g2 bfloat16"]["alpha"] <= 1.0 and result["also_dtype"] == "bfloat16"
    dtypes = {(t.dtype, d.dtype if d is not None else None) for t, d in built}
    assert dtypes == {(torch.float32, None), (torch.float32, torch.float32), (torch.bfloat16, None),
                      (torch.bfloat16, torch.bfloat16)}  # the bfloat16 methods' models are copies, all cast
    for t, d in built:
        if getattr(d, "reads_features", False):
            assert d.teacher is t  # each feature draft reads the teacher it is verified by, in its dtype
    with pytest.raises(ValueError, match="`also_dtype` must be one of float32, bfloat16, float16, got 'bf16'"):
        paired.paired_benchmark("cpu", 1, drafts, str(tmp_path / "teacher"), also_dtype="bf16")
    with pytest.raises(ValueError, match="`also_dtype` adds methods in another dtype"):
        paired.paired_benchmark("cpu", 1, drafts, str(tmp_path / "teacher"), also_dtype="float32")


def test_paired_benchmark_script_takes_the_teacher_and_block_verification(tmp_path, capsys):
    tiny_model(0, num_hidden_layers=3).save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1).save_pretrained(tmp_path / "draft")
    main = script_main("paired_benchmark.py")
    main(["cpu", "1", f"d={tmp_path / 'draft'}", "--teacher", str(tmp_path / "teacher"), "--block_gamma", "4"])
    result = json.loads(capsys.readouterr().out)
    assert result["teacher"] == str(tmp_path / "teacher")
    rows = result["results"]
    assert set(rows) == {"plain", "d g6", "d g8", "d adaptive", "d block g4"}
    assert 1.0 <= rows["d block g4"]["tokens_per_teacher_call"] <= 5.0  # at most gamma + 1 per call
    assert rows["plain"]["tokens_per_teacher_call"] is None
    main(["cpu", "1", f"d={tmp_path / 'draft'}", "--teacher", str(tmp_path / "teacher"), "--gammas", "2", "3",
          "--num_drafts", "2"])
    rows = json.loads(capsys.readouterr().out)["results"]
    assert set(rows) == {"plain", "d g2", "d g3", "d adaptive", "d 2 chains g3"}
    assert 1.0 <= rows["d 2 chains g3"]["tokens_per_teacher_call"] <= 4.0
    with pytest.raises(ValueError, match="`num_drafts` must be integers in \\[2, 16\\]"):
        main(["cpu", "1", f"d={tmp_path / 'draft'}", "--teacher", str(tmp_path / "teacher"), "--num_drafts", "1"])


def test_paired_benchmark_builds_each_decoder_once_with_more_settings_than_the_shared_cache(tmp_path, monkeypatch):
    import hf_specdec.bench.paired as paired
    from hf_specdec.speculative.decoding import MAX_CACHED_DECODERS

    tiny_model(0, num_hidden_layers=2).save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1).save_pretrained(tmp_path / "draft")
    built = []

    class CountingDecoder(paired.SpeculativeDecoder):
        def __init__(self, *args, **kwargs):
            built.append(args[2])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(paired, "SpeculativeDecoder", CountingDecoder)
    drafts = {"a": str(tmp_path / "draft"), "b": str(tmp_path / "draft")}
    result = paired_benchmark("cpu", 2, drafts, teacher_path=str(tmp_path / "teacher"), block_gamma=3,
                              gammas=(1, 2), num_drafts=(2, 3))
    assert len(result["results"]) == len(built) > MAX_CACHED_DECODERS  # one decoder per method, never rebuilt


def test_engine_benchmark_streams_images_through_a_batch(tmp_path):
    """`--stream_images`: plain and speculative draw that many images through each smaller batch; their times and
    speedups are per image, their tokens per teacher call count every image."""
    from hf_specdec.bench.engine_speed import EngineBenchmarkArguments, run_engine_benchmark

    tiny_model(0, num_hidden_layers=3).save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1).save_pretrained(tmp_path / "draft")
    args = EngineBenchmarkArguments(checkpoints_dir=str(tmp_path), draft="draft", gamma=3, extra_gammas=[],
                                    batch_sizes=[2], methods=["eager"], extras=False, reps=2, stream_images=5,
                                    output_dir=str(tmp_path / "out"))
    records = {r["method"]: r for r in run_engine_benchmark(args)["records"]}
    stream, batch = records["speculative-stream/eager"], records["speculative/eager"]
    assert stream["images"] == 5 and batch["images"] == 2 and stream["batch_size"] == 2
    assert stream["ms_per_image"] == pytest.approx(stream["median_ms"] / 5)
    assert stream["speedup_vs_plain_same_mode"] == pytest.approx(
        records["plain-stream/eager"]["ms_per_image"] / stream["ms_per_image"])
    assert 1 <= stream["tokens_per_teacher_call"] <= 4
    assert "5 images streamed" in (tmp_path / "out" / "results.md").read_text()


def test_engine_benchmark_times_the_frozen_engine_on_the_cpu(tmp_path):
    """`--methods compile-frozen`: plain and speculative with the weights compiled in (CPU), the same random numbers
    as eager so the same tokens, and the fastest plain loop chosen among every mode's."""
    from hf_specdec.bench.engine_speed import EngineBenchmarkArguments, run_engine_benchmark

    tiny_model(0, num_hidden_layers=2).save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1).save_pretrained(tmp_path / "draft")
    args = EngineBenchmarkArguments(checkpoints_dir=str(tmp_path), draft="draft", gamma=2, extra_gammas=[],
                                    batch_sizes=[1], methods=["eager", "compile-frozen"], extras=False, reps=1,
                                    output_dir=str(tmp_path / "out"))
    records = {r["method"]: r for r in run_engine_benchmark(args)["records"]}
    assert set(records) == {"plain/eager", "speculative/eager", "plain/compile-frozen", "speculative/compile-frozen"}
    for family in ("plain", "speculative"):
        frozen = records[f"{family}/compile-frozen"]
        assert "error" not in frozen and frozen["tokens_equal_to_" + f"{family}/eager"] > 0.9
        assert frozen["fastest_plain"] in ("plain/eager", "plain/compile-frozen")


def test_engine_benchmark_times_a_feature_draft(tmp_path):
    """A feature draft (it loads with its teacher) runs in every engine mode; the rows that cannot take it (the old
    loops' speculative row, HF assisted generation) are left out with a note instead of refusing the draft."""
    from hf_specdec.bench.engine_speed import EngineBenchmarkArguments, check_engine, run_engine_benchmark
    from hf_specdec.models import make_feature_draft

    teacher = tiny_model(0, num_hidden_layers=2)
    teacher.save_pretrained(tmp_path / "teacher")
    make_feature_draft(teacher, num_layers=1, hidden_size=2 * teacher.config.hidden_size).save_pretrained(
        tmp_path / "feature")  # twice the teacher's width: the cache bytes count the draft's own width
    args = EngineBenchmarkArguments(checkpoints_dir=str(tmp_path), draft="feature", gamma=2, extra_gammas=[],
                                    batch_sizes=[1], methods=["legacy", "eager", "hf-assisted"], extras=False, reps=1,
                                    output_dir=str(tmp_path / "out"))
    result = run_engine_benchmark(args)
    records = {r["method"]: r for r in result["records"]}
    assert set(records) == {"plain/eager", "speculative/eager", "plain/legacy"}
    assert "error" not in records["speculative/eager"] and 0 < records["speculative/eager"]["alpha"] <= 1
    c = teacher.config
    assert result["kv_cache_bytes"]["1"] == c.max_position_embeddings * 2 * 4 * (2 * c.hidden_size + 1 * 2 * c.hidden_size)
    assert any("reads the teacher's features" in note for note in result["notes"])
    report = check_engine(args, ["eager"])
    assert report["greedy speculative/eager cfg=None equals generate()"] is True
