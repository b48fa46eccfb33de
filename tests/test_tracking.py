"""MLflow tracking written by the stages: URIs and helpers; the spool's queues per store, against real
sqlite stores and a server that is down; then a bare `dvc repro` against a real `mlflow server` on
127.0.0.1 (lineage tags, datasets, curves, a registered model with its alias)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from synth2 import tracking
from synth2.errors import Synth2Error
from synth2.tracking.spool import SpoolRun, destination, read_state, spool_dir, unavailable
from synth2.tracking.sync import sync as send
from tests.conftest import ROOT, default_params
from tests.dvc_project import dvc, make_project, project_env

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens


def test_tracking_uri_is_absolute_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert tracking.resolve_tracking_uri("store/m.db", tmp_path) == f"sqlite:///{tmp_path}/store/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == "http://127.0.0.1:5999"


def test_metrics_are_flattened_and_numeric_only():
    values = {"unseen": {"attr_all": 0.5, "n": 3, "ok": True, "name": "x"}, "bleu-4": 0.1, "bad key(1)": 2}
    assert tracking.numeric_metrics(values) == {
        "unseen.attr_all": 0.5,
        "unseen.n": 3.0,
        "bleu-4": 0.1,
        "bad key_1_": 2.0,
    }
    assert tracking.lookup({"a": {"b": 1}}, "a.b") == 1


def test_api_is_a_no_op_outside_a_stage_run():
    assert tracking.log_metrics({"a": 1}) is None
    assert tracking.log_model("/nonexistent", "m") is None
    assert tracking.promote_best({"a": "x"}, {"a": 1.0}, "val.total", "m") is None


# ------------------------------------------------------------------------------ the spool, per store


def spool_run(
    root: Path, uri: str, name: str, monkeypatch: pytest.MonkeyPatch, tags: dict | None = None, **run_params
) -> str:
    """Record a closed run for `uri` into the spool, as a flow records its own; its key."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = {"seed": 7, **run_params}
    key = tracking.start_pipeline_run(default_params(), name, run_params=params, root=root)
    tracking.end_pipeline_run(key, "FINISHED", {"loss": len(name) / 10}, tags, root=root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    return key


def runs_in(uri: str) -> dict[str, object]:
    """{run name: run} of the synth2 experiment in the store at `uri`."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synth2")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])} if experiment else {}


def kept(root: Path) -> set[str]:
    return {p.name for p in spool_dir(root).iterdir() if p.is_dir()} if spool_dir(root).is_dir() else set()


def sync_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`synth2 tracking sync ARGS` in the project, as a person types it (no MLFLOW_TRACKING_URI)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [str(Path(sys.executable).parent / "synth2"), "tracking", "sync", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_a_run_kept_for_an_unreachable_store_holds_back_no_other_store(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    store = f"sqlite:///{workspace}/mlflow.db"
    blocked = spool_run(workspace, UNREACHABLE, "blocked", monkeypatch)  # the oldest run of the spool
    spool_run(workspace, store, "first", monkeypatch)
    spool_run(workspace, store, "second", monkeypatch, note="x")

    result = tracking.send_spool(workspace, timeout=2)
    runs = runs_in(store)
    assert set(runs) == {"first", "second"}
    assert runs["second"].data.params == {"seed": "7", "note": "x"} and runs["second"].data.metrics == {"loss": 0.6}
    assert kept(workspace) == {blocked}
    assert result.failed and result.destinations[store].sent == 2 and result.destinations[UNREACHABLE].waiting == 1
    assert set(unavailable(workspace)) == {UNREACHABLE}

    # A stage is told once that its store is down; a stage recording for another store is not told at all.
    with caplog.at_level(logging.WARNING, logger="synth2.tracking"):
        for uri in (store, UNREACHABLE, UNREACHABLE):
            key = spool_run(workspace, uri, "stage", monkeypatch)
            tracking.runs._say_once_if_unavailable(workspace, destination(spool_dir(workspace) / key))
    told = [r.getMessage() for r in caplog.records if "waits in the spool" in r.getMessage()]
    assert len(told) == 1 and UNREACHABLE in told[0]


def test_sync_reports_each_store_and_names_the_way_out_for_one_that_is_down(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    other = f"sqlite:///{workspace}/other.db"
    spool_run(workspace, UNREACHABLE, "blocked", monkeypatch)
    spool_run(workspace, other, "sent", monkeypatch)

    result = sync_cli(workspace, "--timeout", "2")
    assert result.returncode == 0, result.stderr[-2000:]  # a store that is down is news, not an error
    down, sent = result.stdout.splitlines()  # a line per store, the oldest run's first
    assert sent == f"{other}: 1 run(s) sent"
    assert down.startswith(f"{UNREACHABLE}: 1 run(s) wait (unreachable: ")
    project_store = f"sqlite:///{workspace}/mlflow.db"  # params.tracking.tracking_uri: where stages record now
    assert f"`synth2 tracking sync --from {UNREACHABLE} --to {project_store}`" in down
    assert f"`synth2 tracking sync --drop {UNREACHABLE}`" in down
    assert set(runs_in(other)) == {"sent"}


def test_sync_from_to_sends_a_dead_stores_runs_to_another_store(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    spool_run(workspace, UNREACHABLE, "early", monkeypatch, lr=0.1)
    spool_run(workspace, UNREACHABLE, "later", monkeypatch, lr=0.2)
    waiting = tracking.send_spool(workspace, timeout=2).message
    (suggested,) = [part for part in waiting.split("`") if "--to" in part]  # the command the message names

    result = sync_cli(workspace, *shlex.split(suggested)[3:])
    assert result.returncode == 0, result.stderr[-2000:]
    store = f"sqlite:///{workspace}/mlflow.db"
    assert result.stdout.splitlines() == [f"{UNREACHABLE}: 2 run(s) moved to {store}", f"{store}: 2 run(s) sent"]
    runs = runs_in(store)
    assert set(runs) == {"early", "later"} and not kept(workspace) and not unavailable(workspace)
    assert runs["early"].data.params == {"seed": "7", "lr": "0.1"} and runs["early"].data.metrics == {"loss": 0.5}
    assert runs["later"].data.params["lr"] == "0.2" and runs["later"].info.status == "FINISHED"


def test_sync_drop_deletes_a_dead_stores_runs_and_says_how_many(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    store = f"sqlite:///{workspace}/mlflow.db"
    spool_run(workspace, UNREACHABLE, "gone-1", monkeypatch)
    spool_run(workspace, UNREACHABLE, "gone-2", monkeypatch)
    spool_run(workspace, store, "kept", monkeypatch)
    with pytest.raises(Synth2Error, match=rf"no runs wait for http://127.0.0.1:99 .*{UNREACHABLE}"):
        send(workspace, drop=["http://127.0.0.1:99"])  # a typo: nothing dropped, the stores there named
    assert len(kept(workspace)) == 3

    result = sync_cli(workspace, "--drop", UNREACHABLE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"{UNREACHABLE}: 2 run(s) dropped", f"{store}: 1 run(s) sent"]
    assert not kept(workspace) and set(runs_in(store)) == {"kept"}  # dropped, not sent anywhere


def test_a_store_that_refuses_a_run_is_the_error_keeps_its_order_and_the_others_still_get_theirs(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    refusing, fine = f"sqlite:///{workspace}/refusing.db", f"sqlite:///{workspace}/fine.db"
    spool_run(workspace, refusing, "bad-tag", monkeypatch, tags={"bad!key": "v"})  # not a name MLflow takes
    spool_run(workspace, refusing, "after", monkeypatch)  # a good run, but behind the bad one in its queue
    spool_run(workspace, fine, "fine", monkeypatch)

    result = sync_cli(workspace)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{fine}: 1 run(s) sent"]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr
    assert error.startswith(f"error: synth2 tracking: {refusing}: 2 run(s) wait (refused: MlflowException: ")
    assert set(runs_in(fine)) == {"fine"} and len(kept(workspace)) == 2
    assert "after" not in runs_in(refusing)  # not sent ahead of the run it followed


# ------------------------------------------------------------------------------ replay: each event once


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float, int]]:
    """The metric's history in the store as (step, value, timestamp), in the order the store returns it."""
    from mlflow import MlflowClient

    return sorted((m.step, m.value, m.timestamp) for m in MlflowClient(uri).get_metric_history(run_id, key))


def spool_curve_run(root: Path, uri: str, name: str, monkeypatch: pytest.MonkeyPatch, points: int) -> str:
    """An open run with a loss curve of `points` steps, each point its own event, as a long training logs it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    key = tracking.start_pipeline_run(default_params(), name, root=root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    run = SpoolRun(spool_dir(root) / key)
    for step in range(points):
        run.record("curves", curves={"loss": [[step, 1 / (step + 1)]]})
    return key


def test_a_sync_cut_short_and_resumed_then_run_again_sends_each_event_once(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    store = f"sqlite:///{workspace}/mlflow.db"
    key = spool_curve_run(workspace, store, "cut", monkeypatch, points=5)
    model = workspace / "tiny-model"
    model.mkdir()
    (model / "weights.txt").write_text("1")
    run = SpoolRun(spool_dir(workspace) / key)
    run.record("model", name="tiny", dir=run.keep(model), md5="0123456789abcdef0123456789abcdef")
    report = workspace / "report.txt"
    report.write_text("the report")
    tracking.end_pipeline_run(key, "FINISHED", {"final": 0.25}, root=workspace, artifacts=[report])
    # The failure, at a real boundary: the artifact's spooled copy is gone when the sync reaches it (as a
    # file system that went away would), so the sync stops after the events before it.
    (spooled,) = (run.directory / "files").glob("*/report.txt")
    hidden = spooled.rename(workspace / "hidden.txt")

    cut = send(workspace)
    assert cut.destinations[store].waiting == 1 and kept(workspace) == {key}
    (partial,) = runs_in(store).values()
    run_id = partial.info.run_id
    assert partial.data.metrics["final"] == 0.25  # sent before the cut
    assert not MlflowClient(store).list_artifacts(run_id)

    hidden.rename(spooled)
    resumed = send(workspace)
    again = send(workspace)  # nothing left: a second sync sends nothing twice
    assert resumed.destinations[store].sent == 1 and not again.destinations and not kept(workspace)

    client = MlflowClient(store)
    (finished,) = runs_in(store).values()  # the run of the first sync, completed, and no second one
    assert finished.info.run_id == run_id and finished.info.status == "FINISHED"
    loss = history(store, run_id, "loss")
    assert [(step, value) for step, value, _ in loss] == [(s, 1 / (s + 1)) for s in range(5)]
    assert len(history(store, run_id, "final")) == 1
    assert [a.path for a in client.list_artifacts(run_id) if not a.is_dir] == ["report.txt"]
    experiment = client.get_experiment_by_name("synth2").experiment_id
    logged = client.search_logged_models(experiment_ids=[experiment])
    assert [(m.name, m.source_run_id) for m in logged] == [("tiny", run_id)]  # the model event, once


def test_a_sync_killed_mid_run_and_run_again_sends_each_run_and_point_once(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    store = f"sqlite:///{workspace}/mlflow.db"
    points = 150
    keys = [spool_curve_run(workspace, store, f"run-{i}", monkeypatch, points) for i in range(3)]
    for key in keys:
        tracking.end_pipeline_run(key, "FINISHED", {"final": 1.0}, root=workspace)

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",  # this checkout's synth2, not the venv's editable install
    }
    sync = subprocess.Popen([sys.executable, "-m", "synth2.tracking.sync"], cwd=workspace, env=env)
    second = spool_dir(workspace) / keys[1]
    # kill -9 once the second run is part-way: created in MLflow, some of its points sent, not all.
    while sync.poll() is None and read_state(second).get("done", 0) < 10:
        time.sleep(0.005)
    sync.kill()
    sync.wait()
    assert keys[0] not in kept(workspace) and {keys[1], keys[2]} <= kept(workspace), "not killed mid-run"

    send(workspace)
    send(workspace)
    from mlflow import MlflowClient

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("synth2").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run-0", "run-1", "run-2"] and not kept(workspace)
    for run in runs:
        assert run.info.status == "FINISHED"
        loss = history(store, run.info.run_id, "loss")
        assert [(step, value) for step, value, _ in loss] == [(s, 1 / (s + 1)) for s in range(points)]


def test_each_variants_evaluation_lands_on_the_run_that_trained_it(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    """evaluate's `log_variant_metrics`: a variant's scores go to the run whose `dvc.out.` tag has its model's
    md5 (the compare view lines the variants up); a model no run trained (restored from DVC's cache) gets a
    run of its own named after the variant. The evaluating run itself gets none of them."""
    from dvc.repo import Repo

    from synth2.tracking.lineage import dvc_md5
    from synth2.tracking.runs import _active

    Repo.init(str(workspace), no_scm=True).close()  # models are found by DVC's md5 of their directory
    monkeypatch.chdir(workspace)  # the stages' paths are relative to the project
    store = f"sqlite:///{workspace}/mlflow.db"
    models = {"synth": "models/vlm/synth", "baseline": "models/vlm/baseline"}
    for variant, directory in models.items():
        Path(directory).mkdir(parents=True)
        (Path(directory) / "weights.txt").write_text(variant)
    synth_md5 = dvc_md5(models["synth"])
    spool_run(workspace, store, "older synth", monkeypatch, tags={"dvc.out.models/vlm/synth": "an older model"})
    spool_run(workspace, store, "train synth", monkeypatch, tags={"dvc.out.models/vlm/synth": synth_md5})

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    key = tracking.start_pipeline_run(default_params(), "evaluate", root=workspace)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    evaluating = _active.set(SpoolRun(spool_dir(workspace) / key))
    try:
        scores = {"synth": {"val": {"cider": 0.5}}, "baseline": {"val": {"cider": 0.25}}}
        tracking.log_variant_metrics(models, scores)
    finally:
        _active.reset(evaluating)
    tracking.end_pipeline_run(key, "FINISHED", root=workspace)
    send(workspace)

    runs = runs_in(store)
    assert set(runs) == {"older synth", "train synth", "evaluate", "vlm baseline"}
    trained, restored = runs["train synth"], runs["vlm baseline"]
    assert trained.data.metrics == {"loss": 1.1, "val.cider": 0.5} and trained.data.tags["synth2.variant"] == "synth"
    assert restored.data.metrics == {"val.cider": 0.25} and restored.data.tags["synth2.variant"] == "baseline"
    assert restored.data.tags["dvc.out.models/vlm/baseline"] == dvc_md5(models["baseline"])
    assert "val.cider" not in runs["older synth"].data.metrics and "val.cider" not in runs["evaluate"].data.metrics


def lock_md5s(root: Path) -> dict[str, dict[str, str]]:
    """{stage: {path: md5}} for deps and outs, as DVC recorded them in dvc.lock."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {
        stage: {e["path"]: e["md5"] for e in entry.get("deps", []) + entry.get("outs", [])}
        for stage, entry in lock.items()
    }


@pytest.mark.slow
def test_bare_dvc_repro_records_lineage_in_an_mlflow_server(
    tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    # Its own registered model: other tests on the same server register the same toy bytes, and the
    # registry (rightly) keeps one version per content.
    registered = "synth2-vlm-lineage-test"
    project = make_project(
        tmp_path / "project", {"seed": 1, "tracking": {"champion_metric": "total", "registered_model": registered}}
    )
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server)
    dvc(project, "repro", env=env)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    md5s = lock_md5s(project)

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("synth2")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`synth2.git.commit` = '{commit}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["synth2.stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    # One run per `dvc repro`, one nested run per stage.
    assert len(parents) == 1 and set(children) == {"make_numbers", "sum_numbers"}
    parent = parents[0]
    assert parent.data.tags["synth2.execution"] == "dvc repro" and parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children.values())

    for stage, run in children.items():
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["synth2.git.commit"] == commit and tags["synth2.git.dirty"] == "false"
        recorded = {k.split(".", 2)[2]: v for k, v in tags.items() if k.startswith(("dvc.dep.", "dvc.out."))}
        assert recorded == md5s[stage]  # the md5 of every dep and out, exactly as DVC locked it

    make, total = children["make_numbers"], children["sum_numbers"]
    assert make.data.params["seed"] == "1"
    assert make.data.metrics == {"count": 5.0, "nested.mean": 3.0, "loss": pytest.approx(1 / 41)}
    assert [m.step for m in client.get_metric_history(make.info.run_id, "loss")] == [0, 10, 20, 30, 40]
    assert total.data.params["tracking.champion_metric"] == "total" and total.data.metrics["total"] == 15.0
    inputs = {(d.dataset.name, d.dataset.digest, d.tags[0].value) for d in total.inputs.dataset_inputs}
    data_md5 = md5s["sum_numbers"]["data/numbers.json"]
    assert inputs == {("data/numbers.json", data_md5, "input")}
    assert {a.path for a in client.list_artifacts(make.info.run_id, "dvc/metrics")} == {"dvc/metrics/numbers.json"}

    # The model: logged once, registered, aliased champion; its tag ties it to DVC's out md5.
    version = client.get_model_version_by_alias(registered, "champion")
    model = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    assert model.tags["synth2.dvc_md5"] == md5s["sum_numbers"]["models/tiny"]
    assert model.source_run_id == total.info.run_id
    assert version.tags["variant"] == "tiny"
    loaded = mlflow.pyfunc.load_model(f"models:/{registered}@champion").unwrap_python_model().load()
    assert (Path(loaded) / "weights.txt").read_text() == "15"

    # A second repro of unchanged bytes keeps the registry version; a new `dvc repro` is a new parent.
    dvc(project, "repro", "--force", "sum_numbers", env=env)
    assert client.get_model_version_by_alias(registered, "champion").version == version.version
    parents_now = client.search_runs([experiment.experiment_id], filter_string="tags.`synth2.execution` = 'dvc repro'")
    assert len([r for r in parents_now if r.data.tags.get("synth2.execution_id")]) == 2
