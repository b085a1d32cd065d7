"""The main job on the shipped checkpoints: a valid PNG, the timing report, and clean errors."""

import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_generate_on_shipped_checkpoints(tmp_path):
    result = run("--samples_per_class", "1", "--output", tmp_path / "grid.png")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("10 images", "teacher alone:", "speculative", "acceptance alpha:"):
        assert line in result.stdout
    with Image.open(tmp_path / "grid.png") as grid:
        grid.verify()
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] >= 32 and grid.size[1] >= 32 * 2


def test_generate_reports_bad_input_without_a_traceback(tmp_path):
    for args, words in [
        (["--classes", "12"], "classes"),
        (["--teacher", str(tmp_path / "missing")], "teacher"),
        (["--assistant", "checkpoints/digits/vq-tokenizer"], "assistant"),
        (["--method", "magic"], "method"),
    ]:
        result = run(*args, "--output", tmp_path / "x.png")
        assert result.returncode != 0
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
