"""A copy of the project on the tiny world (synth2.presets.TINY): dvc.yaml, params.yaml and the sources,
git-initialised with one commit and DVC-initialised, so `dvc repro`, the flows and `synth2 study` run on it
exactly as on the repository. conftest.py builds one and reproduces it once per test session
(`tiny_pipeline`); tests that break things work on a copy (`copy_project`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from synth2.launch import without_server
from tests.conftest import ROOT, stage_env, write_params

BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=synth2 tests", "-c", "user.email=tests@synth2.invalid", "-c", "commit.gpgsign=false"]


def project_env(**extra: str) -> dict[str, str]:
    env = stage_env() | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return env | extra


def dvc(root: Path, *args: str, cold: bool = False, **env: str) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `root`; its stages warm from the session's stage server unless `cold`."""
    environment = without_server(project_env(**env)) if cold else project_env(**env)
    return subprocess.run(
        [str(BIN / "dvc"), *args], cwd=root, env=environment, capture_output=True, text=True, timeout=1200
    )


def make_tiny_project(root: Path, overrides: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", root)
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(root, overrides)
    (root / ".gitignore").write_text(".synth2/\nmlflow.db\nmlartifacts/\n")
    for cmd in (["git", "init", "-q", "-b", "main"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    subprocess.run([str(BIN / "dvc"), "config", "core.analytics", "false"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "tiny project"], cwd=root, check=True)
    return root


def commit_all(root: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=root, check=True, capture_output=True)


def copy_project(source: Path, target: Path) -> Path:
    """A full copy (workspace, git, DVC cache): a test may break it without touching the shared one."""
    shutil.copytree(source, target, symlinks=True)
    return target


def snapshot(root: Path, *relative: str | Path) -> dict[str, bytes]:
    """The bytes of every file under the given paths, to compare before and after a failure."""
    files = {}
    for rel in relative:
        path = root / rel
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                files[str(file.relative_to(root))] = file.read_bytes()
    return files


def stages_run_cold(root: Path, server_log: str) -> list[str]:
    """The stages of `root`'s dvc.lock that no line of a stage server's log says it ran in `root`: those that
    ran cold (or not at all)."""
    served = set(re.findall(r"stage server: (synth2\.stages\..+?) \(pid \d+\) in (.+)$", server_log, re.M))
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    module = lambda cmd: f"synth2.stages.{cmd.split('synth2.launch ')[1]}"  # noqa: E731
    return [name for name, entry in stages.items() if (module(entry["cmd"]), str(root)) not in served]
