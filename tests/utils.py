"""The one home of test helpers: tiny models and tokenizers, random images, running a script (in this process or in
a fresh one, always with this interpreter), hiding the package from a subprocess.

Test files import from here, not from each other. (`tests/conftest.py` re-exports `tiny_config` and `tiny_model`, and
keeps `HostSyncCounter`, for the engine and sampler tests that import them from there.)
"""

import contextlib
import io
import os
import runpy
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_specdec import VQGPTConfig, VQGPTForCausalLM
from hf_specdec.models import VQTokenizer

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints" / "digits"


# -- tiny models ------------------------------------------------------------------------------------------------

def tiny_config(**overrides) -> VQGPTConfig:
    fields = dict(
        codebook_size=16, num_classes=3, grid_h=4, grid_w=4, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, dropout=0.0,
    )
    fields.update(overrides)
    return VQGPTConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> VQGPTForCausalLM:
    torch.manual_seed(seed)
    model = VQGPTForCausalLM(tiny_config(**overrides)).eval()
    # Random init gives near-uniform logits; sharper ones make greedy/cfg tests discriminative.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


TINY_VQ = dict(block_out_channels=(32, 32, 32), num_vq_embeddings=16, latent_channels=8)


def tiny_vq(seed: int = 0, **overrides) -> VQTokenizer:
    """A VQ tokenizer for 32x32 images, 8x8 codes, 16 codes."""
    torch.manual_seed(seed)
    return VQTokenizer(**{**TINY_VQ, **overrides}).eval()


def random_images(batch: int = 2, seed: int = 0, size: int = 32) -> torch.Tensor:
    """`(batch, 3, size, size)` uniform in [-1, 1]."""
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def truncate(path, fraction: float = 0.5) -> None:
    """Cut the file `path` to `fraction` of its size (an interrupted download or copy)."""
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * fraction))


# -- running scripts ----------------------------------------------------------------------------------------------

@dataclass
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str


def run_script(name: str, *args) -> ScriptResult:
    """Run `scripts/<name>` in this process exactly as `python scripts/<name> args` runs it (its `__main__` block,
    so `hf_specdec.cli.run` and its exit status), from the repository root; returns the exit status and output.

    Progress bars are off, so stderr holds what the script itself reports.
    """
    import datasets
    import transformers

    stdout, stderr = io.StringIO(), io.StringIO()
    argv, cwd = sys.argv, os.getcwd()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    code = 0
    try:
        os.chdir(ROOT)
        sys.argv = [str(ROOT / "scripts" / name), *map(str, args)]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(cwd)
        datasets.enable_progress_bars()
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return ScriptResult(code, stdout.getvalue(), stderr.getvalue())


def script_main(name: str):
    """`main(argv)` of `scripts/<name>`, for calling a script in this process with a list of arguments."""
    return runpy.run_path(str(ROOT / "scripts" / name))["main"]


def python_env(**extra) -> dict:
    """This process's environment with this checkout first on `PYTHONPATH` (so a subprocess imports the `hf_specdec`
    under test, not another installation), plus `extra`."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_python(args: list, timeout: float = 600, env: dict | None = None, cwd=ROOT, **kwargs) -> subprocess.CompletedProcess:
    """`python args...` in a fresh process with *this* interpreter (`sys.executable`, never a `python` or console
    script from PATH) and `env` (default `python_env()`), in its own process group: on timeout the whole group (e.g.
    the workers of a launcher) is killed, not only the launcher, and `subprocess.TimeoutExpired` carries the output."""
    process = subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=python_env() if env is None else env, cwd=cwd, start_new_session=True,
                               **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(process.args, timeout, stdout, stderr) from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Put first in a script run by `python -c`: `hf_specdec` then cannot be imported (what a Hub user without it sees).
HIDE_HF_SPECDEC = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hf_specdec":
                raise ImportError("hf_specdec is hidden in this test")
    sys.meta_path.insert(0, Block())
    """
)

