"""Lineage: the git commit and dirty flag, the DVC stage running now, and DVC's md5 of its deps and outs."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

# Only tracked files that *code or params* live in make a run dirty; the pipeline itself rewrites
# dvc.lock and the git-tracked (cache: false) metrics and plots while it runs.
_PIPELINE_WRITTEN = ("dvc.lock",)


def git_state(root: Path, ignore: set[str] = frozenset()) -> tuple[str, bool]:
    """(commit, dirty): dirty when a tracked file other than the pipeline's own outputs changed."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:].strip() for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    skip = set(_PIPELINE_WRITTEN) | set(ignore)
    dirty = any(path not in skip and not any(path.startswith(s.rstrip("/") + "/") for s in skip) for path in changed)
    return commit, dirty


def dvc_invocation() -> tuple[str, str] | None:
    """(key, command) of the `dvc` process running this stage, or None when there is none.

    Stages of one `dvc repro` share that process, so its pid and start time identify the execution.
    """
    import psutil

    try:
        for proc in psutil.Process().parents():
            argv = proc.cmdline()
            names = [os.path.basename(a) for a in argv[:3]]
            if "dvc" not in names:
                continue
            verbs = [a for a in argv[names.index("dvc") + 1 :] if not a.startswith("-")]
            command = "dvc exp run" if verbs[:2] == ["exp", "run"] else "dvc " + (verbs[0] if verbs else "")
            return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}", command.strip()
    except psutil.Error:
        return None
    return None


def load_dvc_stage(name: str) -> tuple[Any, Any, set[str]]:
    """(repo, stage, outs): DVC's repository, the stage running now (DVC_STAGE, set by DVC) or the one
    named `name`, and every out in dvc.lock (`pipeline_outs`); (None, None, set()) outside a DVC project,
    stage None when there is no such stage.

    Read under DVC's repository lock, waiting for it. DVC rewrites dvc.lock in place (truncate, then
    write) and lets its lock go while a stage's command runs, so in the parallel flow another stage's DVC
    process may be writing dvc.lock right now: read unlocked, it can be empty or half-written.
    """
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo, lock_repo
    from dvc.stage.exceptions import StageNotFound

    try:
        repo = Repo(os.getcwd(), _wait_for_lock=True)
    except NotDvcRepoError:  # e.g. a stage test in a bare temporary workspace
        return None, None, set()
    address = os.environ.get("DVC_STAGE") or name
    with lock_repo(repo):
        outs = pipeline_outs(Path(repo.root_dir))
        try:
            return repo, repo.stage.load_one(name=address.split(":")[-1]), outs
        except (StageNotFound, DvcException):  # no dvc.yaml, or no stage of that name
            return repo, None, outs


def dvc_md5(path: str | Path) -> str | None:
    """DVC's md5 of a file or directory (`<md5>.dir` for directories), via DVC's own hashing and its
    state cache, so DVC does not hash the same bytes again after the stage."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    path = Path(path)
    if not path.exists():
        return None
    try:
        repo = Repo(os.getcwd())
    except NotDvcRepoError:  # a bare workspace: no DVC, no md5
        return None
    odb = repo.cache.local  # its state db is the one DVC reads hashes back from
    _, _, obj = build(odb, str(path.resolve()), odb.fs, "md5", ignore=repo.dvcignore, dry_run=True)
    return obj.hash_info.value


def pipeline_outs(root: Path) -> set[str]:
    """Every out in dvc.lock: the pipeline rewrites them (and dvc.lock), so they do not make code dirty.

    Read from dvc.lock rather than DVC's index of dvc.yaml: the same paths for every stage that ran, in
    milliseconds instead of the 0.4 s DVC takes to resolve the templated dvc.yaml in every stage.
    """
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return set()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    stages = (yaml.load(lock.read_text(), Loader=loader) or {}).get("stages", {})
    return {out["path"] for stage in stages.values() for out in stage.get("outs", [])}


def hashes(entries) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        try:
            info = entry.get_hash()
        except Exception:  # a missing out (e.g. the stage failed before writing it)
            continue
        if info and info.value:
            out[entry.def_path] = info.value
    return out
