"""A Hub-API server on loopback for tests: olah (PyPI) serving local git repos, offline (no upstream).

    with serve_git_repos(tmp, {"datasets/org/name": folder}, probe="datasets/org/name") as endpoint:
        subprocess.run([...], env={..., "HF_ENDPOINT": endpoint})

Each folder is committed as a git repo under `tmp/mirror/<repo type>s/<org>/<name>`, the layout olah's
`mirrors-path` serves. `serve_mirror` starts the server over a mirror laid out by the caller (tests/test_hub_download.py
writes the model repos itself, with their cards).
"""

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

GIT = ["git", "-c", "user.name=hf-specdec", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commit_folder(folder: Path) -> None:
    """Make `folder` a git repo with everything in it committed on `main`."""
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "Upload with hf-specdec"]):
        subprocess.run(GIT + args, cwd=folder, check=True, capture_output=True)


@contextlib.contextmanager
def serve_git_repos(tmp: Path, repos: dict[str, Path], probe: str, timeout: float = 60.0):
    """Copy each `{"<type>s/<org>/<name>": folder}` into olah's mirror as a git repo, start olah on a free port and
    yield its endpoint once `/api/<probe>/revision/main` answers; the server stops on exit."""
    if shutil.which("git") is None:
        raise RuntimeError("git is needed to serve local repos with olah")
    for name, folder in repos.items():
        target = tmp / "mirror" / name
        shutil.copytree(folder, target)
        commit_folder(target)
    with serve_mirror(tmp, probe, timeout) as endpoint:
        yield endpoint


@contextlib.contextmanager
def serve_mirror(tmp: Path, probe: str, timeout: float = 60.0):
    """Start olah on a free port, offline, serving the git repos already under `tmp/mirror/<type>s/<org>/<name>`;
    yield its endpoint once `/api/<probe>/revision/main` answers (RuntimeError with olah's log if it never does);
    the server stops on exit."""
    port = free_port()
    (tmp / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{tmp / "olah-cache"}"\n'
        f'mirrors-path = ["{tmp / "mirror"}"]\n[accessibility]\noffline = true\n'
    )
    log = open(tmp / "olah.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "olah.server", "-c", str(tmp / "olah.toml")], cwd=tmp,
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/api/{probe}/revision/main", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"olah did not start: {(tmp / 'olah.log').read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
