"""A non-editable install (`pip install .` into a fresh virtualenv) carries what the package reads at run time: the
model card templates render from it, away from the repository."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.utils import CHECKPOINTS, ROOT, run_python

RENDER = textwrap.dedent(
    """
    import sys
    import hf_specdec, hf_specdec.hub as hub
    assert hf_specdec.__file__.startswith(sys.prefix), (hf_specdec.__file__, sys.prefix)  # the installed copy
    card = hub.model_card(sys.argv[1], "org/teacher", teacher_repo="org/teacher", draft_repo="org/draft-1L")
    assert "{{" not in card.text and "# org/teacher" in card.text
    print("card-ok", hub.TEMPLATES)
    """
)


def test_non_editable_install_renders_a_model_card(tmp_path):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the package without network (`pip install setuptools`)")
    source = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "checkpoints", "benchmarks", "build", "dist", "*.egg-info", "__pycache__", "outputs", "wandb", ".venv"))
    venv = tmp_path / "venv"
    # The interpreter's own packages are visible (nothing is downloaded); pip is the interpreter's too.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--no-index", str(source)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may come from the source tree any more

    result = subprocess.run([str(python), "-c", RENDER, str(CHECKPOINTS / "teacher")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "card-ok" in result.stdout and str(venv) in result.stdout


def test_scripts_run_with_a_virtualenv_python_that_is_not_activated(tmp_path):
    """Subprocesses are started with `sys.executable`: a virtualenv's python runs the project without the virtualenv
    on PATH (where no `accelerate` or `python` of it would be found)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(venv)))
    result = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; from tests.utils import run_python; "
                             "r = run_python(['-c', 'import sys; print(sys.executable)']); "
                             "print(r.stdout.strip(), r.returncode)"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(venv / "bin" / "python"), "0"]
    assert run_python(["-c", "import sys; print(sys.executable)"]).stdout.strip() == sys.executable
