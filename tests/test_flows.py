"""Prefect deployments and flows against a real Prefect server (and MLflow server) on 127.0.0.1.

The flows run a throwaway two-stage DVC project (tests/dvc_project.py), so the orchestration machinery
is tested independently of the model code.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.dvc_project import make_project
from tests.services import BIN, service_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Fails the way a synth2 stage does on bad input: one "error: stage ..." line, exit status 1.
BROKEN_CMD = 'python -c "import sys; sys.exit(\\"error: stage \'broken\': bad input\\")"'


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str, prefect_server: str) -> Iterator[Path]:
    """The tiny project, with flows pointed at the test servers for the whole module."""
    root = make_project(tmp_path_factory.mktemp("flows") / "project")

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with pytest.MonkeyPatch.context() as mp, temporary_settings({PREFECT_API_URL: prefect_server}):
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mp.setenv("SYNTH2_TRACKING_STRICT", "1")
        yield root


def run_async(coro):
    return asyncio.run(coro)


def test_deployments_register_with_their_schedules(prefect_server: str, tmp_path: Path):
    env = service_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path), SYNTH2_ROOT=str(ROOT))
    for args in (
        ["work-pool", "create", "synth2-local", "--type", "process", "--overwrite"],
        ["--no-prompt", "deploy", "--all"],
    ):
        result = subprocess.run(
            [str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.experiment import synth2_experiment
    from flows.pipeline import synth2_pipeline
    from flows.study import synth2_study

    flow_names = {
        "flows/pipeline.py:synth2_pipeline": synth2_pipeline.name,
        "flows/experiment.py:synth2_experiment": synth2_experiment.name,
        "flows/study.py:synth2_study": synth2_study.name,
    }
    expected = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]

    async def read_back():
        async with get_client() as client:
            return [
                await client.read_deployment_by_name(f"{flow_names[d['entrypoint']]}/{d['name']}") for d in expected
            ]

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        deployments = run_async(read_back())
    for want, got in zip(expected, deployments):
        assert got.parameters == want["parameters"]
        assert got.work_pool_name == "synth2-local"
        assert got.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
        schedules = [(s.schedule.cron, s.schedule.timezone, s.active) for s in got.schedules]
        assert schedules == [(s["cron"], s["timezone"], s["active"]) for s in want["schedules"]]
    assert sum(bool(d.schedules) for d in deployments) >= 2


def test_pipeline_flow_runs_then_skips_every_stage(project: Path, mlflow_server: str, prefect_server: str):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import synth2_pipeline

    client = MlflowClient(mlflow_server)
    first = synth2_pipeline(root=str(project))
    runs_after_first = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    second = synth2_pipeline(root=str(project))
    assert [(o["stage"], o["ran"]) for o in first["stages"]] == [("make_numbers", True), ("sum_numbers", True)]
    assert [o["ran"] for o in second["stages"]] == [False, False]  # unchanged: DVC skips every stage
    assert first["metrics"]["metrics/total.json"] == {"total": 15.0}

    parent = client.get_run(first["mlflow_run_id"])
    flow_run_id = parent.data.tags["synth2.prefect.flow_run_id"]
    assert parent.info.status == "FINISHED" and flow_run_id
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["synth2.stage"] for c in children) == ["make_numbers", "sum_numbers"]
    assert {c.data.tags["synth2.prefect.flow_run_id"] for c in children} == {flow_run_id}
    # Nothing stale: the flow opens no MLflow run (it would record nothing); its Prefect summary says so.
    assert second["mlflow_run_id"] is None
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_after_first

    async def summaries():
        async with get_client() as prefect:
            found = await prefect.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["synth2-pipeline-summary"]))
            )
            return [a.data for a in found]

    texts = run_async(summaries())
    assert any("**2 ran, 0 up to date**" in t and first["mlflow_run_id"] in t for t in texts)
    assert any("**0 ran, 2 up to date**" in t for t in texts)


def test_failed_stage_stops_the_flow_without_retrying(project: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.pipeline import synth2_pipeline

    dvc_file = project / "dvc.yaml"
    original = dvc_file.read_text()
    dvc_yaml = yaml.safe_load(original)
    dvc_yaml["stages"]["broken"] = {"cmd": BROKEN_CMD, "always_changed": True}
    dvc_file.write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    try:
        state = synth2_pipeline(targets=["broken"], root=str(project), return_state=True)
    finally:
        dvc_file.write_text(original)
    assert state.is_failed()
    with pytest.raises(Exception, match="^stage 'broken': bad input$"):
        state.result()

    async def task_runs():
        async with get_client() as prefect:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return await prefect.read_task_runs(flow_run_filter=flt)

    broken = [t for t in run_async(task_runs()) if t.name.startswith("broken")]
    assert len(broken) == 1 and broken[0].run_count == 1  # a stage's own error is not worth a retry


def test_experiment_flow_keeps_params_yaml_and_records_overrides(project: Path, mlflow_server: str):
    from mlflow import MlflowClient

    from flows.experiment import synth2_experiment

    params_before = (project / "params.yaml").read_bytes()
    result = synth2_experiment({"seed": 3}, name="seed3", root=str(project))
    assert (project / "params.yaml").read_bytes() == params_before
    assert result["metrics"]["metrics/total.json"] == {"total": 25.0}  # 3+4+5+6+7, from the experiment
    listed = subprocess.run(
        [str(BIN / "dvc"), "exp", "list", "--name-only"], cwd=project, capture_output=True, text=True
    )
    assert "seed3" in listed.stdout.split()

    client = MlflowClient(mlflow_server)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.data.params["override.seed"] == "3" and parent.data.tags["synth2.dvc.exp_name"] == "seed3"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert {c.data.params.get("seed") for c in children if c.data.tags["synth2.stage"] == "make_numbers"} == {"3"}


# Two independent stages and one that joins them. Each records when it ran in a file DVC does not track,
# so the outputs (and dvc.lock) cannot depend on how the flow scheduled them.
SLOW_STAGE = """import sys, time
name, started = sys.argv[1], time.time()
time.sleep(2)
open(f"{name}.txt", "w").write(name)
open(f"{name}.when", "w").write(f"{started} {time.time()}")
"""
PARALLEL_DVC_YAML = {
    "stages": {
        "left": {"cmd": "python slow.py left", "deps": ["slow.py"], "outs": ["left.txt"]},
        "right": {"cmd": "python slow.py right", "deps": ["slow.py"], "outs": ["right.txt"]},
        "join": {"cmd": "cat left.txt right.txt > join.txt", "deps": ["left.txt", "right.txt"], "outs": ["join.txt"]},
    }
}


def parallel_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "slow.py").write_text(SLOW_STAGE)
    (root / "dvc.yaml").write_text(yaml.safe_dump(PARALLEL_DVC_YAML, sort_keys=False))
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (root / ".gitignore").write_text("*.when\n.synth2/\n")
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def test_the_parallel_flow_overlaps_independent_stages_and_writes_what_the_serial_one_writes(tmp_path: Path):
    from flows.pipeline import synth2_pipeline

    runs = {}
    for limit in (1, 2):
        root = parallel_project(tmp_path / f"limit{limit}")
        result = synth2_pipeline(root=str(root), max_parallel=limit)
        assert [o["stage"] for o in result["stages"]] == ["left", "right", "join"] and all(
            o["ran"] for o in result["stages"]
        )
        spans = [tuple(map(float, (root / f"{s}.when").read_text().split())) for s in ("left", "right")]
        runs[limit] = (yaml.safe_load((root / "dvc.lock").read_text()), spans)
    (serial_lock, serial), (parallel_lock, parallel) = runs[1], runs[2]
    assert serial_lock == parallel_lock  # same outputs, same lock
    overlapped = lambda spans: spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # noqa: E731
    assert overlapped(parallel) and not overlapped(serial)


def test_a_stage_waits_for_dvcs_lock_instead_of_failing(tmp_path: Path):
    """Another DVC process holds the repository lock: the task's DVC waits for it (the short locked phases
    of parallel stages), it does not fail with "Unable to acquire lock"."""
    import threading

    from dvc.repo import Repo

    root = parallel_project(tmp_path / "project")
    holder = Repo(str(root))
    holder.lock.lock()
    threading.Timer(3.0, holder.lock.unlock).start()
    result_file = tmp_path / "result.json"
    script = ROOT / "tasks" / "_repro.py"
    env = service_env(PATH=f"{BIN}:{os.environ['PATH']}")
    command = [sys.executable, str(script), "left", str(result_file)]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(result_file.read_text()) == {"stage": "left", "ran": True}


def test_the_summary_leads_with_the_headline_numbers_and_the_champion(tmp_path: Path):
    from flows.common import summary_markdown

    def scores(cider: float, unseen: float) -> dict:
        return {
            "overall": {"cider": cider, "attr_colour_shape": 0.7},
            "unseen": {"cider": 1.0, "attr_colour_shape": unseen},
        }

    evaluation = {
        "test": {"baseline": scores(4.0, 0.25), "synth": scores(5.0, 0.75)},
        "gain_over_baseline": {"test": {"synth": {"overall.cider": 0.25, "unseen.attr_colour_shape": 2.0}}},
        "champion": {"variant": "synth", "metric": "val.unseen.attr_all", "value": 0.625, "margin": 0.2},
    }
    report = tmp_path / "pipeline.html"
    report.write_text("<html>")
    outcomes = [{"stage": "prepare", "ran": True, "seconds": 1.0}, {"stage": "report", "ran": False, "seconds": 0.1}]
    text = summary_markdown("synth2 pipeline", outcomes, evaluation, None, report=report)
    assert "**1 ran, 1 up to date**" in text and "| report | up to date |" in text
    assert "| synth | 5.000 | +25.0% | 0.750 | +200.0% |" in text
    assert "| baseline | 4.000 | — | 0.250 | — |" in text
    assert "Champion, chosen on validation: **synth**, by val.unseen.attr_all = 0.625, 0.200 ahead" in text
    assert report.resolve().as_uri() in text
    # A profile without colour+shape (coco): the column is left out, not shown as n/a.
    coco = {"test": {"baseline": {"overall": {"cider": 0.5}}, "synth": {"overall": {"cider": 0.6}}}}
    assert "unseen colour+shape" not in summary_markdown("t", outcomes, coco, None)
    assert "| synth | 0.600 | — |" in summary_markdown("t", outcomes, coco, None)
