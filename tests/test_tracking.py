"""MLflow tracking written by the stages: URIs and helpers, then a bare `dvc repro` against a real
`mlflow server` on 127.0.0.1 (lineage tags, datasets, curves, a registered model with its alias)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from synth2 import tracking
from tests.dvc_project import dvc, make_project, project_env


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
