"""Stages of the parallel flow read dvc.lock only under DVC's repository lock.

DVC rewrites dvc.lock in place (truncate, then write) while it holds its lock, and lets the lock go while
a stage's command runs; in the parallel flow another stage's DVC process writes dvc.lock at any moment.
Each test holds DVC's lock itself with dvc.lock empty, as a writer caught between truncating and writing
leaves it, starts the reader, and lets go only once the reader is waiting for the lock: a reader that
does not wait finds the empty file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.dvc_project import dvc, make_project, project_env

WAITING = "probe: waiting for DVC's lock"

# Runs a script as __main__ after wrapping DVC's lock attempt so that the first failed attempt prints
# WAITING: the test's signal that the script is now blocked on the lock, DVC's real lock all along.
PROBE = f"""
import runpy, sys
import dvc.lock

attempt = dvc.lock.Lock._do_lock
told = []

def probed(self):
    try:
        attempt(self)
    except dvc.lock.LockError:
        if not told:
            told.append(True)
            print({WAITING!r}, flush=True)
        raise

dvc.lock.Lock._do_lock = probed
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "project")
    dvc(root, "repro", env=project_env())
    return root


def read_while_dvc_lock_is_being_written(root: Path, cmd: list[str], env: dict[str, str]) -> str:
    """Run `cmd` (a python script and its arguments) in `root` while DVC's lock is held and dvc.lock is
    empty; restore dvc.lock and let go once it waits for the lock. Its output; it must succeed."""
    from dvc.repo import Repo

    lock = root / "dvc.lock"
    written = lock.read_text()
    with Repo(str(root)) as repo:
        repo.lock.lock()
        try:
            lock.write_text("")
            proc = subprocess.Popen(
                [sys.executable, "-c", PROBE, *cmd],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:  # until it waits for the lock, or ends having read the empty file
                lines.append(line)
                if line.strip() == WAITING:
                    break
            lock.write_text(written)
        finally:
            repo.lock.unlock()
        output = "".join(lines) + proc.stdout.read()
        assert proc.wait(timeout=300) == 0, output
    return output


def test_a_stage_task_reads_dvc_lock_only_under_dvcs_lock(project: Path, tmp_path: Path):
    result = tmp_path / "result.json"
    cmd = [str(ROOT / "tasks" / "_repro.py"), "sum_numbers", str(result), "--force"]
    output = read_while_dvc_lock_is_being_written(project, cmd, project_env())
    assert WAITING in output
    assert json.loads(result.read_text()) == {"stage": "sum_numbers", "ran": True}
    assert "sum_numbers" in (project / "dvc.lock").read_text()


def test_a_stage_records_its_lineage_from_dvc_lock_read_under_dvcs_lock(project: Path):
    """The stage's tracking loads its DVC stage (dvc.yaml and dvc.lock) while DVC, which runs it, has let
    its lock go: it waits for the lock, and records its deps' md5s rather than nothing."""
    from mlflow import MlflowClient

    # Tracking on, into the project's own store, whatever another test of this worker left in os.environ
    # (CI once ran this with tracking off or another store: no run reached the project's mlflow.db).
    env = {
        k: v for k, v in project_env(DVC_STAGE="sum_numbers", SYNTH2_TRACKING="1").items() if k != "MLFLOW_TRACKING_URI"
    }
    output = read_while_dvc_lock_is_being_written(project, [str(project / "stages" / "sum_numbers.py")], env)
    assert WAITING in output
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")  # the project's own store (strict: synced)
    experiment = client.get_experiment_by_name("synth2")
    newest = client.search_runs(
        [experiment.experiment_id], "tags.`synth2.stage` = 'sum_numbers'", order_by=["attributes.start_time DESC"]
    )[0]
    assert newest.data.tags.get("dvc.dep.data/numbers.json"), newest.data.tags
