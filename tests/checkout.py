"""A workspace of its own that `make` treats as this checkout, for tests that run `make serve`, `make ui`
or `make run`: the Makefile, the dependency files, prefect.yaml, .env.example and docker/make_env.py,
flows/ and tasks/ copied (with their times, so the install stamp stays fresh), and .venv linked to
this checkout's environment, or to `portable_environment`, the same packages for a test that runs as
another user; and that user, a UID with no passwd entry (`unused_ids`, `run_as`, `chown_tree`)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
# .env.example and docker/make_env.py: `make serve` writes .env from them when there is none;
# docker/mlflow_server.py: the compose stack's MLflow, which serves flows.ui's app (tests/test_compose.py).
FILES = (
    "Makefile",
    "pyproject.toml",
    "requirements.lock",
    "prefect.yaml",
    ".env.example",
    "docker/make_env.py",
    "docker/mlflow_server.py",
)
PACKAGES = ("flows", "tasks")


def copy_checkout(dst: Path, venv: Path = VENV) -> Path:
    """Copy the entry points into `dst` (which may already hold a project); return `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dst / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    if not (dst / "params.yaml").exists():  # a project's own params stay; `make ui` reads the experiment's name
        shutil.copy2(ROOT / "params.yaml", dst / "params.yaml")
    (dst / ".venv").symlink_to(venv)
    return dst


def portable_environment(dst: Path) -> tuple[Path, dict[str, str]]:
    """This checkout's environment as a venv in `dst/venv` that every user can run; returns the venv and
    the variables its interpreter needs. The venv's own interpreter may live where only its owner can
    go (pyenv under /root): then its installation, without site-packages, is hard-linked (copied
    across file systems) into `dst/python`, and LD_LIBRARY_PATH points its binary at its libpython.
    The venv gets this venv's site-packages (synth2's editable install included), its console
    scripts and its install stamp, so `make` finds it installed."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    env: dict[str, str] = {}
    if not reachable_by_all(base):
        python_home = dst / "python"

        def skip(directory: str, names: list[str]) -> list[str]:
            return ["site-packages", "test"] if Path(directory) == base / "lib" / version else []

        try:
            shutil.copytree(base, python_home, symlinks=True, ignore=skip, copy_function=os.link)
        except OSError:  # another file system
            shutil.rmtree(python_home, ignore_errors=True)
            shutil.copytree(base, python_home, symlinks=True, ignore=skip)
        base, env = python_home, {"LD_LIBRARY_PATH": str(python_home / "lib")}
    venv = dst / "venv"
    subprocess.run([str(base / "bin" / version), "-m", "venv", "--without-pip", str(venv)], env=env, check=True)
    # addsitedir, not a plain path line: the editable install of synth2 is itself a .pth file there.
    pth = f"import site; site.addsitedir({str(VENV / 'lib' / version / 'site-packages')!r})\n"
    (venv / "lib" / version / "site-packages" / "synth2_checkout_venv.pth").write_text(pth)
    shebang = f"#!{VENV / 'bin' / 'python'}"
    for script in (VENV / "bin").iterdir():
        target = venv / "bin" / script.name
        if script.is_file() and not script.is_symlink() and not target.exists():
            with open(script, "rb") as f:
                first = f.readline().decode(errors="replace")
            if first.startswith(shebang):  # python or python3.11: a console script
                target.write_text(f"#!{venv / 'bin' / 'python'}\n" + script.read_text().split("\n", 1)[1])
                target.chmod(0o755)
    for stamp in VENV.glob(".installed-*"):  # make's install stamp
        shutil.copy2(stamp, venv / stamp.name)
    return venv, env


def reachable_by_all(path: Path) -> bool:
    """Whether every user can reach `path` (o+x on it and each directory above it)."""
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def unused_ids() -> tuple[int, int]:
    """A UID and GID that no account has: the container's host user has no passwd entry either."""
    uid = next(i for i in range(23000, 60000) if not _exists(pwd.getpwuid, i))
    gid = next(i for i in range(23000, 60000) if not _exists(grp.getgrgid, i))
    return uid, gid


def _exists(lookup, ident: int) -> bool:
    try:
        lookup(ident)
        return True
    except KeyError:
        return False


def run_as(ids: tuple[int, int]) -> dict:
    return {"user": ids[0], "group": ids[1], "extra_groups": []}


def chown_tree(path: Path, ids: tuple[int, int]) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, *ids)
