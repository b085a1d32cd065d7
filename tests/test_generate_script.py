"""The main job on the shipped checkpoints: a valid PNG and the timing report. (Its bad input: tests/test_cli.py.)"""

from PIL import Image

from tests.utils import run_script


def test_generate_on_shipped_checkpoints(tmp_path):
    result = run_script("generate.py", "--classes", "0", "7", "--samples_per_class", "2", "--output", tmp_path / "grid.png")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("4 images", "teacher alone:", "speculative", "acceptance alpha:"):
        assert line in result.stdout
    with Image.open(tmp_path / "grid.png") as grid:
        grid.verify()
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] >= 32 * 2 and grid.size[1] >= 32 * 2  # 2 classes x 2 samples
