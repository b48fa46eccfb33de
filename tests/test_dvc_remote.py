"""Machines share the pipeline's data through a DVC remote: what one clone produced and pushed, a fresh clone
(a worker machine's `git clone`) pulls, and finds every stage up to date: nothing re-runs.

The remote is a local directory, as a shared path would be; an S3-compatible remote differs only in its
URL and credentials (README "Scaling out"). One test drives the flow's own pull and push
(`orchestration.pull` / `push`) on the throwaway two-stage project of tests/dvc_project.py; the other
round-trips the session's tiny pipeline with DVC alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.dvc_project import GIT, dvc, make_project
from tests.tiny_project import dvc as tiny_dvc
from tests.tiny_project import snapshot

pytestmark = pytest.mark.slow

SHARING = {"seed": 1, "tracking": {"champion_metric": "total"}, "orchestration": {"pull": True, "push": True}}


@pytest.fixture(scope="module")
def prefect(prefect_server: str) -> Iterator[None]:
    """Flows against the session's Prefect server; MLflow tracking is not what these tests are about."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with pytest.MonkeyPatch.context() as mp, temporary_settings({PREFECT_API_URL: prefect_server}):
        mp.setenv("SYNTH2_TRACKING", "0")
        yield


def git(root: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)


def test_a_fresh_clone_pulls_what_the_flow_pushed_and_reruns_nothing(prefect, tmp_path: Path, monkeypatch):
    from flows.pipeline import synth2_pipeline

    first, remote = make_project(tmp_path / "first", SHARING), tmp_path / "remote"
    dvc(first, "remote", "add", "-d", "shared", str(remote))
    git(first, "add", "-A")
    git(first, "commit", "-qm", "a shared DVC remote")

    # Each machine runs the flow in its own clone (flows.common.stale_stages resolves DVC targets against
    # the current directory).
    monkeypatch.chdir(first)
    produced = synth2_pipeline(root=str(first))  # pulls nothing yet, runs both stages, pushes
    assert [o["ran"] for o in produced["stages"]] == [True, True]
    assert any(p.is_file() for p in remote.rglob("*")), "the flow pushed nothing"
    git(first, "add", "-A")  # dvc.lock, and the metrics and plots DVC leaves to git (cache: false)
    git(first, "commit", "-qm", "pipeline run")

    second = tmp_path / "second"
    git(tmp_path, "clone", "-q", str(first), str(second))
    assert not (second / "data" / "numbers.json").exists() and not (second / "models" / "tiny").exists()
    monkeypatch.chdir(second)
    pulled = synth2_pipeline(root=str(second))
    assert [o["ran"] for o in pulled["stages"]] == [False, False]  # pulled, so up to date: nothing re-ran
    assert (second / "data" / "numbers.json").read_bytes() == (first / "data" / "numbers.json").read_bytes()
    assert (second / "models" / "tiny" / "weights.txt").read_text() == "15"
    assert "up to date" in dvc(second, "status").stdout


def test_the_tiny_pipeline_round_trips_through_a_dvc_remote(tiny_pipeline: Path, tmp_path: Path):
    """Every stage of the real pipeline, pushed from one clone and pulled into a fresh one, is up to date
    there: `dvc status` is clean, and `dvc repro` runs no stage and leaves dvc.lock and every out as the
    clone that produced them has them, byte for byte."""
    source = tmp_path / "head"
    shutil.copytree(tiny_pipeline, source, symlinks=True)
    remote = tmp_path / "remote"
    assert tiny_dvc(source, "remote", "add", "-d", "shared", str(remote)).returncode == 0
    git(source, "add", ".dvc/config")
    git(source, "commit", "-qm", "a shared DVC remote")
    pushed = tiny_dvc(source, "push")
    assert pushed.returncode == 0, pushed.stderr[-2000:]

    worker = tmp_path / "worker"
    git(tmp_path, "clone", "-q", str(source), str(worker))
    assert tiny_dvc(worker, "status").stdout.count("deleted") > 0  # a fresh clone: outs missing
    pulled = tiny_dvc(worker, "pull")
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    status = tiny_dvc(worker, "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout[-2000:]

    lock = yaml.safe_load((source / "dvc.lock").read_text())["stages"]
    outs = sorted({out["path"] for entry in lock.values() for out in entry.get("outs", [])})
    before = snapshot(worker, "dvc.lock", *outs)
    assert before == snapshot(source, "dvc.lock", *outs)  # the pull brought every out, cached or not
    repro = tiny_dvc(worker, "repro")
    assert repro.returncode == 0, repro.stderr[-2000:]
    assert "Running stage" not in repro.stdout, repro.stdout[-2000:]
    skipped = set(re.findall(r"Stage '([^']+)' didn't change, skipping", repro.stdout))
    assert skipped == set(lock), repro.stdout[-2000:]  # DVC looked at every stage and ran none
    assert snapshot(worker, "dvc.lock", *outs) == before
