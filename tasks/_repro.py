"""`python tasks/_repro.py STAGE RESULT_JSON [--force]`: reproduce one DVC stage with DVC's Python API.

Run in a subprocess by `tasks.dvc_stages.run_dvc_stage` so the task gets DVC's own answer to "did the
stage run?" (the list `Repo.reproduce` returns) while DVC keeps its locks, cache and dvc.lock, and the
flow process stays free of DVC's global state.

DVC deletes a stage's outputs before it runs the stage's command. Here the outputs are first set aside
(hard links: no copy), and put back when the stage fails, so a failure loses nothing, `cache: false`
metrics and plots included: the workspace is as it was before the attempt, and dvc.lock still matches it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from dvc.exceptions import DvcException
from dvc.repo import Repo, lock_repo

BACKUPS = Path(".synth2") / "restore"


def _link_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, copy_function=os.link, symlinks=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def recover_abandoned(root: Path, stage_name: str) -> None:
    """An attempt killed outright (SIGKILL, a lost machine) leaves its backup behind, and DVC had deleted
    the outputs: put back every output still missing, then drop the backup."""
    prefix = stage_name.replace("@", "-")
    for backup in sorted((root / BACKUPS).glob(f"{prefix}.*.*")):
        pid = backup.name.split(".")[-2]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        for saved in sorted(backup.iterdir()):
            for path in [saved] if saved.is_file() else sorted(p for p in saved.rglob("*") if p.is_file()):
                target = root / path.relative_to(backup)
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
        shutil.rmtree(backup, ignore_errors=True)
        print(f"stage '{stage_name}': put back outputs an interrupted attempt had lost ({backup.name})")


def set_aside(repo: Repo, stage_name: str) -> tuple[Path, list[Path]] | None:
    """Hard-link the stage's existing outputs into a backup directory: (backup, outputs relative to the
    repository root), or None when the stage has none yet."""
    root = Path(repo.root_dir)
    recover_abandoned(root, stage_name)
    stage = repo.stage.collect(stage_name)[0]
    outs = [Path(out.fs_path).relative_to(root) for out in stage.outs if Path(out.fs_path).exists()]
    if not outs:
        return None
    (root / BACKUPS).mkdir(parents=True, exist_ok=True)
    name = f"{stage_name.replace('@', '-')}.{os.getpid()}."  # the pid tells a live attempt's from an abandoned one
    backup = Path(tempfile.mkdtemp(prefix=name, dir=root / BACKUPS))
    for out in outs:
        _link_tree(root / out, backup / out)
    return backup, outs


def put_back(repo: Repo, saved: tuple[Path, list[Path]]) -> None:
    """Replace whatever the failed attempt left with the outputs set aside."""
    root = Path(repo.root_dir)
    backup, outs = saved
    for out in outs:
        target = root / out
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(backup / out, target)
    shutil.rmtree(backup, ignore_errors=True)


def _interrupt(signum, frame):  # noqa: ARG001 - the signal handler's signature
    raise KeyboardInterrupt  # unwinds through put_back()


def main(argv: list[str]) -> int:
    stage, result_path, *flags = argv
    signal.signal(signal.SIGTERM, _interrupt)
    backup = None
    try:
        # Wait for DVC's repository lock instead of failing: another stage's task may hold it for the
        # short phases around its command. Hold it from the first read: DVC rewrites dvc.lock in place
        # (truncate, then write), so reading the stage (set_aside) while another task's DVC writes its
        # entry can find dvc.lock empty ("'./dvc.lock' validation failed: required key not provided @
        # data['schema']", seen once in the parallel flow). reproduce() takes the same lock (DVC counts
        # the depth) and still lets it go while the stage's command runs.
        with Repo(".", _wait_for_lock=True) as repo, lock_repo(repo):
            backup = set_aside(repo, stage)
            try:
                # single_item: the flow walks the DAG itself, one task per stage; upstream is done.
                reproduced = repo.reproduce(stage, single_item=True, force="--force" in flags)
            except BaseException:
                if backup is not None:
                    put_back(repo, backup)
                    backup = None
                raise
    except DvcException as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        print(f"dvc: {exc}{cause}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # stopped by the flow (SIGTERM) or Ctrl-C: the outputs are back already
        print(f"stage '{stage}': interrupted", file=sys.stderr)
        return 130
    finally:
        if backup is not None:
            shutil.rmtree(backup[0], ignore_errors=True)
    ran = [s.addressing for s in reproduced]
    with open(result_path, "w") as f:
        json.dump({"stage": stage, "ran": stage in ran}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
