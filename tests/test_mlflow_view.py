"""What a person sees in MLflow, against real stores: `make ui` lands on the synth2 training runs (a real
`mlflow ui`); each VLM variant has its own colour; the pipeline's parent run carries the headline numbers
and the report (a real flow run); a moved or copied checkout still reads its artifacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from synth2 import tracking
from synth2.errors import Synth2Error
from synth2.tracking.relink import relink
from synth2.tracking.variants import VARIANT_COLOURS
from tests.conftest import default_params
from tests.services import BIN, free_port, service_env, started, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def client_of(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root}/mlflow.db")


def record_run(root: Path, name: str, monkeypatch: pytest.MonkeyPatch, artifact: Path | None = None) -> str:
    """A closed pipeline run (with `artifact` under reports/) sent to the project's own store; its run id."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    key = tracking.start_pipeline_run(default_params(), name, root=root)
    tracking.end_pipeline_run(
        key, "FINISHED", {"loss": 0.5}, root=root, artifacts=[artifact] if artifact else [], artifact_path="reports"
    )
    result = tracking.send_spool(root)
    assert not result.failed, result.message
    return result.run_ids[key]


def synth2_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([str(BIN / "synth2"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------ make ui


def test_make_ui_prints_the_address_of_the_synth2_runs_in_the_training_view(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    run_id = record_run(workspace, "pipeline one", monkeypatch)
    client_of(workspace).create_experiment("other")  # the landing page is synth2's, not the newest experiment
    port = free_port()
    store = f"sqlite:///{workspace}/mlflow.db"
    cmd = [sys.executable, "-m", "flows.ui", "--backend-store-uri", store]  # what `make ui` runs
    log = workspace / "ui.log"
    env = service_env(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    health = f"http://127.0.0.1:{port}/health"
    with started([*cmd, "--port", str(port)], env, log, {"cwd": workspace}) as proc:
        wait_healthy(proc, health, log)
        (line,) = [x for x in log.read_text().splitlines() if x.startswith("MLflow UI")]
        url = line.split(": ", 1)[1]
        base, _, fragment = url.partition("#")
        route = urllib.parse.urlsplit(fragment)
        assert base == f"http://127.0.0.1:{port}/"
        _, experiments, experiment_id, runs = route.path.split("/")
        assert (experiments, runs) == ("experiments", "runs")
        # The UI's model-training view: it reads workflowType from the page's URL before its remembered choice.
        assert urllib.parse.parse_qs(route.query) == {"workflowType": ["machine_learning"]}
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b'<div id="root"' in page.read()
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow"
        with urllib.request.urlopen(f"{api}/experiments/get?experiment_id={experiment_id}", timeout=30) as answer:
            experiment = json.load(answer)["experiment"]
        assert experiment["name"] == "synth2"
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
        request = urllib.request.Request(
            f"{api}/runs/search",
            data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert [r["info"]["run_id"] for r in json.load(answer)["runs"]] == [run_id]


def test_make_ui_on_a_new_store_creates_the_training_experiment_it_lands_on(workspace: Path):
    from synth2.tracking.ui import landing_experiment

    experiment_id = landing_experiment(f"sqlite:///{workspace}/mlflow.db", workspace)
    experiment = client_of(workspace).get_experiment(experiment_id)
    assert experiment.name == "synth2" and experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (workspace / "mlartifacts").as_uri()


# ------------------------------------------------------------------------------------------ colours


def test_each_variant_is_drawn_in_its_own_colour(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    """A variant's training run is coloured from its start (stage `train_vlm@VARIANT`); the run that
    evaluate puts a variant's scores on (here: a run of its own, no training run matches) too."""
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SYNTH2_TRACKING_STRICT", "1")  # sync inline; tracking errors fail the test
    params = default_params()
    for variant in VARIANT_COLOURS:
        with tracking.stage_run(f"train_vlm@{variant}", params):
            pass
    models = {}
    for variant in VARIANT_COLOURS:
        models[variant] = workspace / "models" / variant
        models[variant].mkdir(parents=True)
        (models[variant] / "weights.txt").write_text(variant)
    with tracking.stage_run("evaluate", params):
        tracking.log_variant_metrics(models, {v: {"test.overall.cider": 1.0} for v in models})

    client = client_of(workspace)
    runs = client.search_runs([client.get_experiment_by_name("synth2").experiment_id])
    colour = {r.info.run_name: r.data.tags.get("mlflow.runColor") for r in runs}
    assert {colour[f"train_vlm@{v}"] for v in VARIANT_COLOURS} == set(VARIANT_COLOURS.values())
    assert len(set(VARIANT_COLOURS.values())) == len(VARIANT_COLOURS)
    assert {v: colour[f"vlm {v}"] for v in VARIANT_COLOURS} == VARIANT_COLOURS
    assert colour["evaluate"] is None


# ---------------------------------------------------------------------------- the parent (pipeline) run

EVALUATE = """
import json, sys, yaml
from pathlib import Path
seed = yaml.safe_load(open("params.yaml"))["seed"]
evaluation = json.loads(Path("evaluation.json").read_text())
evaluation["test"]["synth"]["overall"]["cider"] = float(seed)  # what differs between two pipeline runs
Path("metrics").mkdir(exist_ok=True)
Path("metrics/evaluate.json").write_text(json.dumps(evaluation))
"""
REPORT = """
from pathlib import Path
Path("reports").mkdir(exist_ok=True)
Path("reports/pipeline.html").write_text("<html>" + Path("metrics/evaluate.json").read_text()[:40] + "</html>")
"""


@pytest.mark.slow
def test_pipeline_and_experiment_runs_carry_the_headline_numbers_and_the_report(
    tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import synth2_pipeline
    from tests.dvc_project import GIT, make_project

    root = make_project(tmp_path / "project")
    shutil.copy(ROOT / "metrics" / "evaluate.json", root / "evaluation.json")  # a real evaluation's shape
    (root / "stages" / "evaluate.py").write_text(EVALUATE)
    (root / "stages" / "report.py").write_text(REPORT)
    stages = {
        "evaluate": {
            "cmd": "python stages/evaluate.py",
            "deps": ["stages/evaluate.py", "evaluation.json"],
            "params": ["seed"],
            "metrics": [{"metrics/evaluate.json": {"cache": False}}],
        },
        "report": {
            "cmd": "python stages/report.py",
            "deps": ["stages/report.py", "metrics/evaluate.json"],
            "outs": ["reports/pipeline.html"],
        },
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "evaluate and report"], cwd=root, check=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own mlflow.db
    monkeypatch.setenv("SYNTH2_TRACKING_STRICT", "1")

    run_ids = []
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        for seed in (3, 4):  # two pipeline runs with different params
            params = yaml.safe_load((root / "params.yaml").read_text())
            (root / "params.yaml").write_text(yaml.safe_dump(params | {"seed": seed}, sort_keys=False))
            run_ids.append(synth2_pipeline(root=str(root))["mlflow_run_id"])

    evaluation = json.loads((root / "metrics" / "evaluate.json").read_text())  # the second run's
    client = client_of(root)
    first, second = (client.get_run(r) for r in run_ids)
    metrics = second.data.metrics
    for variant in ("baseline", "synth", "synth_unbalanced"):
        for split in ("test", "val"):
            for subset in ("overall", "seen", "unseen"):
                for metric in ("cider", "attr_colour_shape", "attr_all"):
                    value = evaluation[split][variant][subset][metric]
                    assert metrics[f"{split}.{variant}.{subset}.{metric}"] == pytest.approx(value)
    gains = evaluation["gain_over_baseline"]
    assert metrics["gain.test.synth.unseen.attr_colour_shape"] == pytest.approx(
        gains["test"]["synth"]["unseen.attr_colour_shape"]
    )
    assert metrics["gain.val.synth_unbalanced.overall.cider"] == pytest.approx(
        gains["val"]["synth_unbalanced"]["overall.cider"]
    )
    assert metrics["champion.margin"] == pytest.approx(evaluation["champion"]["margin"])
    assert second.data.tags["synth2.champion"] == evaluation["champion"]["variant"]
    # Side by side: the same metric on both pipeline runs, each with its own value.
    assert (first.data.metrics["test.synth.overall.cider"], metrics["test.synth.overall.cider"]) == (3.0, 4.0)
    for run in (first, second):
        (artifact,) = client.list_artifacts(run.info.run_id, "reports")
        assert artifact.path == "reports/pipeline.html"
    html = Path(client.download_artifacts(second.info.run_id, "reports/pipeline.html", str(tmp_path)))
    assert html.read_text() == (root / "reports" / "pipeline.html").read_text()

    # A DVC experiment's parent run (the experiment flow) carries the same headline numbers, its own.
    from flows.experiment import synth2_experiment

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        result = synth2_experiment({"seed": 5}, name="seed5", root=str(root))
    experiment = client.get_run(result["mlflow_run_id"]).data.metrics
    assert experiment["test.synth.overall.cider"] == 5.0  # the experiment's evaluation (seed 5), not the workspace's
    assert experiment["gain.val.synth_unbalanced.overall.cider"] == pytest.approx(
        gains["val"]["synth_unbalanced"]["overall.cider"]
    )
    assert experiment["champion.margin"] == pytest.approx(evaluation["champion"]["margin"])


# ------------------------------------------------------------------------------- a checkout that moves


def test_a_moved_checkout_reads_its_artifacts_after_synth2_tracking_relink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mlflow
    from mlflow.exceptions import MlflowException

    from synth2.tracking import registry
    from tests.conftest import write_params

    old = tmp_path / "old"
    old.mkdir()
    write_params(old)
    (old / "pipeline.html").write_text("<html>the report</html>")
    run_id = record_run(old, "pipeline", monkeypatch, artifact=old / "pipeline.html")
    model_dir = old / "model"
    model_dir.mkdir()
    (model_dir / "weights.txt").write_text("42")
    store = f"sqlite:///{old}/mlflow.db"
    model_uri = registry.log_model(client_of(old), run_id, model_dir, "tiny", None)
    mlflow.set_tracking_uri(store)
    mlflow.register_model(model_uri, "tiny")

    new = tmp_path / "moved"
    old.rename(new)
    client = client_of(new)
    with pytest.raises(MlflowException, match="Failed to download"):  # the old directory is gone
        client.download_artifacts(run_id, "reports/pipeline.html", str(tmp_path))

    result = synth2_cli(new, "tracking", "relink")
    assert result.returncode == 0, result.stderr[-2000:]
    old_root, new_root = (old / "mlartifacts").as_uri(), (new / "mlartifacts").as_uri()
    # experiment, run, logged model, model version's storage location (its source is `models:/m-…`)
    assert result.stdout == f"sqlite:///{new}/mlflow.db: 4 artifact location(s) moved from {old_root} to {new_root}\n"
    assert Path(client.download_artifacts(run_id, "reports/pipeline.html", str(tmp_path))).read_text() == (
        "<html>the report</html>"
    )
    mlflow.set_tracking_uri(f"sqlite:///{new}/mlflow.db")
    for uri in (model_uri, "models:/tiny/1"):
        directory = mlflow.pyfunc.load_model(uri).unwrap_python_model().load()
        assert (Path(directory) / "weights.txt").read_text() == "42"
    assert synth2_cli(new, "tracking", "relink").stdout == (
        f"sqlite:///{new}/mlflow.db: nothing to relink, its artifacts are under {new_root}\n"
    )


def test_a_copied_checkout_relinks_itself_and_leaves_the_original_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from tests.conftest import write_params

    original = tmp_path / "original"
    original.mkdir()
    write_params(original)
    (original / "a.html").write_text("original")
    first = record_run(original, "first", monkeypatch, artifact=original / "a.html")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    (copy / "b.html").write_text("copy")
    second = record_run(copy, "second", monkeypatch, artifact=copy / "b.html")  # the sync relinks first

    for run_id in (first, second):
        assert client_of(copy).get_run(run_id).info.artifact_uri.startswith((copy / "mlartifacts").as_uri() + "/")
    assert client_of(original).get_run(first).info.artifact_uri.startswith((original / "mlartifacts").as_uri())
    assert not list((original / "mlartifacts").rglob("b.html"))  # the copy wrote nothing into the original
    assert (
        Path(client_of(copy).download_artifacts(first, "reports/a.html", str(tmp_path / "out"))).read_text()
        == "original"
    )
    # By hand, with no artifacts beside the store: one line that says what to do, nothing changed.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(original / "mlflow.db", lone / "mlflow.db")
    with pytest.raises(Synth2Error, match=f"{lone / 'mlartifacts'} does not exist; move or copy the artifacts"):
        relink(f"sqlite:///{lone}/mlflow.db")
    assert client_of(lone).get_run(first).info.artifact_uri.startswith((original / "mlartifacts").as_uri())
