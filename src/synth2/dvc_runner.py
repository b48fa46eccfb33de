"""How synth2 runs DVC: one place for the interpreter, the environment and the experiment queue.

Both the Prefect tasks (tasks/dvc_stages.py, which stream a stage's output into the Prefect log) and
`synth2 study` (which queues experiments and waits for them) start DVC through this module, so a stage
runs with the same `python` and environment whichever way it was started. Commands that change the
repository go through the `dvc` command line (DVC's own locking and output); what only reads, the
queue's status and the experiments of a commit, goes through DVC's Python API, whose answers are data
rather than a table printed for people.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth2.errors import Synth2Error

# The states `dvc queue status` shows for a task; DVC keeps only successful experiments afterwards.
QUEUE_STATES = ("Queued", "Running", "Success", "Failed")


class DvcCommandFailed(Synth2Error):
    """A `dvc` command exited non-zero; the message is its last line of output."""


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment DVC runs in: dvc.yaml runs `python -m …`, which must be this interpreter (the
    project's venv) whatever PATH the caller had."""
    merged = {**os.environ, **(extra or {})}
    merged["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), merged.get("PATH", "")])
    merged.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return merged


def command(*args: str) -> list[str]:
    """`dvc ARGS` run by this interpreter (no `dvc` entry point on PATH needed). `--wait-for-lock`: a
    queue worker collecting its results, or another stage's task, may hold the repository lock for a
    moment; waiting for it is what a retry would do, without failing first."""
    return [sys.executable, "-m", "dvc", "--wait-for-lock", *args]


def set_args(overrides: Mapping[str, Any]) -> list[str]:
    """`-S key=value` per override, values as JSON (which YAML reads back as the same value). A mapping
    (e.g. `self_improve.rounds`) is `-S ++key={k: v, ...}`, Hydra's own syntax: DVC applies `-S` with
    Hydra, which takes no JSON keys and, without `++`, refuses keys the file's mapping lacks (`rounds: {}`);
    Hydra merges it into the file's mapping, as synth2.params.with_overrides does when checking it."""
    return [arg for key, value in overrides.items() for arg in ("-S", _set_arg(key, value))]


def _hydra_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_hydra_value(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)


def _set_arg(key: str, value: Any) -> str:
    return f"++{key}={_hydra_value(value)}" if isinstance(value, Mapping) else f"{key}={json.dumps(value)}"


def run(root: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run `dvc ARGS` in `root` to its end; its stdout, or DvcCommandFailed with its last line."""
    # Output goes through files, not pipes: `dvc queue start` leaves workers running that inherit its stdout
    # and stderr, and reading pipes would wait for those workers to end, i.e. for the whole queue.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(command(*args), cwd=root, env=environment(env), stdout=out, stderr=err).returncode
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        detail = (stderr or stdout).strip().splitlines()
        raise DvcCommandFailed(f"dvc {' '.join(args[:3])} failed: {detail[-1] if detail else f'exit status {code}'}")
    return stdout


# ---------------------------------------------------------------------------------- experiment queue


@dataclass(frozen=True)
class QueueStatus:
    tasks: dict[str, str]  # experiment name -> one of QUEUE_STATES
    workers: int  # queue workers alive (busy or idle)


def queue_experiment(root: Path, name: str, overrides: Mapping[str, Any]) -> None:
    """`dvc exp run --queue --name NAME -S …`: stash the experiment in DVC's queue (nothing runs yet)."""
    run(root, "exp", "run", "--queue", "--name", name, *set_args(overrides))


def start_workers(root: Path, jobs: int, env: Mapping[str, str] | None = None) -> None:
    """`dvc queue start --jobs J`: idempotent, it starts only the workers that are missing. `env`: more
    environment for the workers, hence for the experiments' stage commands."""
    run(root, "queue", "start", "--jobs", str(jobs), env=env)


def remove_from_queue(root: Path, names: list[str]) -> None:
    run(root, "queue", "remove", *names)


def queue_status(root: Path) -> QueueStatus:
    """What `dvc queue status` shows, from the same calls it makes."""
    from dvc.repo import Repo

    # DVC's queue talks to its workers through kombu's file transport, which warns on every connection
    # that it has no hostname (none is needed): noise in the study's log, where `dvc` itself hides it.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)

    with Repo(str(root), _wait_for_lock=True) as repo:
        queue = repo.experiments.celery_queue
        tasks = {t["name"]: t["status"] for t in queue.status() if t.get("name") and t.get("status") in QUEUE_STATES}
        workers = len(queue.worker_status())
    return QueueStatus(tasks, workers)


def experiment_names(root: Path, baseline: str) -> set[str]:
    """Names of the DVC experiments of commit `baseline` (experiments DVC kept are successful ones)."""
    from dvc.repo import Repo

    # `ls` takes the repository lock, which a worker collecting its results may hold for a moment.
    with Repo(str(root), _wait_for_lock=True) as repo:
        listed = repo.experiments.ls(rev=[baseline])
    return {name for experiments in listed.values() for name, _sha in experiments if name}


def read_file(root: Path, path: Path | str, rev: str, mode: str = "r") -> str | bytes:
    """A file of revision `rev` (a commit or an experiment's name), from git or DVC's cache."""
    import dvc.api

    return dvc.api.read(str(path), repo=str(root), rev=rev, mode=mode)
