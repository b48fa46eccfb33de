"""The real tiny pipeline reproduces itself: every stage forced to re-run cold (each in its own interpreter)
writes, byte for byte, what the session's `tiny_pipeline` wrote with its stages warm (forked from the stage
server), reading only the params keys dvc.yaml declares for it; and the parallel flow run from clean writes
what the serial `dvc repro` that built `tiny_pipeline` wrote. Each test is a whole pipeline run (a minute or
two on 2 cores): one test per claim.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import params_reads
from tests.conftest import ROOT
from tests.tiny_project import copy_project, dvc, make_tiny_project, project_env, snapshot, stages_run_cold

pytestmark = pytest.mark.slow

# Read and deliberately not declared: where a stage's shards run (synth2.params.ComputeParams: only
# `shards` and `train_processes` change outputs) and where its tracking goes never change what it writes,
# so changing them must not re-run anything.
UNDECLARED_BY_DESIGN = (
    "compute.engine",
    "compute.ray_address",
    "compute.workers",
    "compute.cpus_per_worker",
    "compute.gpus_per_worker",
    "tracking.experiment",
    "tracking.tracking_uri",
    "tracking.registered_model",
)


def locked_outputs(root: Path) -> list[str]:
    """Every out of every stage as dvc.lock records them (data, models, metrics, plots, reports)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return sorted({out["path"] for entry in lock.values() for out in entry.get("outs", [])})


def declared_params(root: Path) -> dict[str, list[str]]:
    """{stage address: the params.yaml keys DVC resolved for it from dvc.yaml}, as dvc.lock records them."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {stage: sorted(entry.get("params", {}).get("params.yaml", {})) for stage, entry in lock.items()}


def covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


def stages_reads(log_dir: Path) -> dict[str, set[str]]:
    """{stage address: every params key its processes read}."""
    reads: dict[str, set[str]] = {}
    for path in log_dir.glob("*.json"):
        record = json.loads(path.read_text())
        reads.setdefault(record["stage"], set()).update(record["reads"])
    return reads


def test_every_stage_forced_to_rerun_writes_its_outputs_again_and_reads_only_declared_params(
    tiny_pipeline: Path, tmp_path: Path
):
    project = copy_project(tiny_pipeline, tmp_path / "project")
    outputs = locked_outputs(project)
    before = snapshot(project, "dvc.lock", *outputs)
    shutil.copy(Path(params_reads.__file__), project / "src" / "sitecustomize.py")
    log_dir = tmp_path / "reads"
    log_dir.mkdir()

    # Cold: the recorder is src/sitecustomize.py, which Python runs when a stage's own interpreter starts; and
    # tiny_pipeline ran warm, so this also checks that a cold stage writes what a warm one wrote.
    forced = dvc(
        project, "repro", "--force", cold=True, SYNTH2_TRACKING="0", **{params_reads.LOG_DIR_ENV: str(log_dir)}
    )
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    declared = declared_params(project)
    assert forced.stdout.count("Running stage") == len(declared), forced.stdout[-3000:]  # each ran, once

    after = snapshot(project, "dvc.lock", *outputs)
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    assert not changed, f"re-running every stage changed: {changed}"

    reads = stages_reads(log_dir)
    assert set(reads) == set(declared)  # every stage's process recorded what it read
    undeclared = {
        stage: sorted(
            key for key in keys if not covered(key, declared[stage]) and not covered(key, list(UNDECLARED_BY_DESIGN))
        )
        for stage, keys in reads.items()
        if stage != "check_params"  # it validates the whole file, its dep
    }
    assert not any(undeclared.values()), f"params keys stages read but dvc.yaml does not declare: {undeclared}"
    assert reads["prepare"], "the recorder saw no read: it is not recording"


def test_the_parallel_flow_from_clean_writes_what_serial_dvc_repro_wrote(
    tiny_pipeline: Path, tmp_path: Path, prefect_server: str
):
    project = make_tiny_project(tmp_path / "project")
    flow = [sys.executable, "-m", "flows.pipeline", "--max-parallel", "2"]
    env = project_env(SYNTH2_TRACKING="0", PREFECT_API_URL=prefect_server, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    done = subprocess.run(flow, cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outputs = locked_outputs(tiny_pipeline)
    assert locked_outputs(project) == outputs
    # The same lock: every stage's cmd, deps, params and outs with their md5s. Not the same bytes: DVC adds
    # a stage's entry to a new dvc.lock when the stage finishes, so the entries are in the order they ran.
    lock = lambda root: yaml.safe_load((root / "dvc.lock").read_text())  # noqa: E731
    assert lock(project) == lock(tiny_pipeline)
    serial, parallel = snapshot(tiny_pipeline, *outputs), snapshot(project, *outputs)
    differ = sorted(path for path in serial.keys() | parallel.keys() if serial.get(path) != parallel.get(path))
    assert not differ, f"the parallel flow wrote other bytes than the serial dvc repro: {differ}"
    # ... and it ran every stage warm, forked from its stage server (synth2.stage_server).
    served = (project / ".synth2" / "stage_server.log").read_text()
    cold = stages_run_cold(project, served)
    assert not cold, f"stages the flow ran cold: {cold}\n{served[-3000:]}"
