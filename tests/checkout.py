"""A workspace of its own that `make` treats as this checkout, for tests that run `make serve` or
`make run`: the Makefile, the dependency files, prefect.yaml, flows/ and tasks/ copied (with their
times, so the install stamp stays fresh), and .venv linked to this checkout's environment."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("Makefile", "pyproject.toml", "requirements.lock", "prefect.yaml")
PACKAGES = ("flows", "tasks")


def copy_checkout(dst: Path) -> Path:
    """Copy the entry points into `dst` (which may already hold a project); return `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(ROOT / name, dst / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    (dst / ".venv").symlink_to(ROOT / ".venv")
    return dst
