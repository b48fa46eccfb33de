"""`synth2 study` on the tiny world with 2 seeds: DVC experiments, the aggregate with intervals, the reports,
the MLflow runs, and a rerun that finds its experiments done. Plus the statistics on known numbers, the one
command line shared by `synth2 study` and `python -m flows.study`, and the study's MLflow runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from synth2 import paths
from synth2.study.arguments import StudyArguments
from synth2.study.plan import StudyError, plan
from synth2.study.stats import hierarchical_bootstrap, summarise, t_interval
from tests.dvc_project import make_project
from tests.tiny_project import BIN, copy_project, project_env

STUDY_ARGV = ["--seeds", "0,3", "-S", "train_vlm.synthetic.source_tags=true", "--budgets", "250,500"]
STUDY_ARGV += ["--preset", "tiny", "--jobs", "1", "--name", "same"]
NO_EQUALS = "error: synth2 study: -S 'foo': expected KEY=VALUE, e.g. -S balance.target_size=500\n"


def test_t_interval_and_summary_on_known_numbers():
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2.0 - 2.4841, 2.0 + 2.4841), abs=1e-3)  # t(0.975, 2) * 1 / sqrt(3)
    summary = summarise([1.0, 2.0, 3.0])
    assert summary["mean"] == 2.0 and summary["std"] == 1.0 and summary["n"] == 3


def test_hierarchical_bootstrap_brackets_the_true_difference():
    rng = np.random.default_rng(0)
    per_seed = [(rng.normal(1.0, 0.1, 200), rng.normal(0.0, 0.1, 200)) for _ in range(5)]
    low, high = hierarchical_bootstrap(per_seed, samples=500)
    assert low < 1.0 < high and high - low < 0.1
    same = [(a, a) for a, _ in per_seed]
    assert hierarchical_bootstrap(same, samples=200) == (0.0, 0.0)


def test_an_override_without_equals_fails_in_one_line_in_both_entry_points(capsys, tmp_path, monkeypatch):
    from flows import study as flow
    from synth2 import cli

    monkeypatch.chdir(tmp_path)  # fails before it looks for a project
    errors = []
    for main, argv in ((cli.main, ["study", "-S", "foo"]), (flow.main, ["-S", "foo"])):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 1
        errors.append(capsys.readouterr().err)
    assert errors == [NO_EQUALS, NO_EQUALS]
    with pytest.raises(StudyError) as raised:  # a deployment's parameters: the same message
        flow.plan_study(overrides=["foo"])
    assert f"error: synth2 study: {raised.value}\n" == NO_EQUALS


def test_the_cli_and_the_flow_plan_the_same_study(tmp_path, monkeypatch):
    from flows.study import parameters_from_command_line, plan_study
    from synth2.cli import build_parser

    monkeypatch.chdir(make_project(tmp_path / "project"))
    from_cli = plan(StudyArguments.from_namespace(build_parser().parse_args(["study", *STUDY_ARGV])))
    assert plan_study(**parameters_from_command_line(STUDY_ARGV)) == from_cli
    # A deployment's typed parameters plan the same study as the strings of the command line.
    typed = {"overrides": {"train_vlm.synthetic.source_tags": True}, "budgets": [250, 500], "preset": "tiny"}
    assert plan_study(seeds=[0, 3], jobs=1, name="same", **typed) == from_cli
    assert from_cli.seeds == [0, 3] and from_cli.jobs == 1
    assert [c.label for c in from_cli.configurations] == ["target_size=250", "target_size=500"]
    assert all(c.overrides["train_vlm.synthetic.source_tags"] is True for c in from_cli.configurations)
    # Seeds as a count, in either form.
    assert plan_study(seeds=3).seeds == plan_study(seeds="3").seeds == [0, 1, 2]
    assert plan_study(seeds="7,").seeds == [7]


def test_the_study_logs_a_parent_run_and_a_child_per_experiment(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from synth2.study.mlflow_runs import log_to_mlflow

    root = make_project(tmp_path / "project")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SYNTH2_TRACKING", "1")
    entry = {"mean": 0.5, "values": [0.4, 0.6]}
    summary = {"test": {"synth": {"overall": {"cider": entry}}}}
    configuration = {
        "label": "default",
        "overrides": {"balance.target_size": 500},
        "experiments": {0: "logged-abc123-s0", 1: "logged-abc123-s1"},
        "summary": summary,
        "differences": {"synth - baseline": {"test": {"unseen": {"cider": {"mean": 0.25}}}}},
    }
    report = {"name": "logged", "seeds": [0, 1], "commit": "abc", "configurations": [configuration]}
    (root / "logged.md").write_text("# the report\n")
    parent_id = log_to_mlflow(report, {"md": root / "logged.md"}, root)

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    assert parent.data.tags["synth2.study"] == "logged" and parent.data.params["seeds"] == "[0, 1]"
    assert parent.data.metrics["default.synth - baseline.test.unseen.cider"] == 0.25
    assert [a.path for a in client.list_artifacts(parent_id, "study")] == ["study/logged.md"]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    by_seed = {c.data.tags["synth2.seed"]: c for c in children}
    assert sorted(by_seed) == ["0", "1"] and by_seed["1"].data.metrics["test.synth.overall.cider"] == 0.6
    assert by_seed["0"].data.params == {"seed": "0", "balance.target_size": "500"}
    assert {c.info.status for c in children} == {"FINISHED"} and parent.info.status == "FINISHED"


@pytest.mark.slow
def test_a_two_seed_study_of_the_tiny_world(tiny_pipeline: Path, tmp_path: Path):
    project = copy_project(tiny_pipeline, tmp_path / "project")
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def study() -> subprocess.CompletedProcess:
        command = [str(BIN / "synth2"), "study", "--seeds", "0,1", "--jobs", "2", "--name", "tiny"]
        env = project_env(SYNTH2_TRACKING="1", MLFLOW_TRACKING_URI=uri)
        return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=1500)

    first = study()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 experiments, 0 already done, 2 to run" in first.stderr
    report = json.loads((project / "reports/study/tiny.json").read_text())
    [configuration] = report["configurations"]
    assert report["seeds"] == [0, 1] and set(configuration["experiments"]) == {"0", "1"}
    # Seed 0 of the study is the pipeline the project already reproduced: the same numbers.
    committed = json.loads((project / paths.EVAL_METRICS).read_text())
    cider = configuration["summary"]["test"]["synth"]["overall"]["cider"]
    assert cider["values"][0] == committed["test"]["synth"]["overall"]["cider"]
    assert cider["n"] == 2 and cider["ci95"][0] <= cider["mean"] <= cider["ci95"][1]
    difference = configuration["differences"]["synth - baseline"]["test"]["unseen"]["attr_colour_shape"]
    assert set(difference) >= {"mean", "ci95", "bootstrap_ci95", "relative_to_minus", "values"}
    balance = configuration["differences"]["balanced - unbalanced"]["val"]["overall"]["cider"]
    assert len(balance["values"]) == 2
    markdown = (project / "reports/study/tiny.md").read_text()
    assert "| synth | unseen |" in markdown and "Paired differences" in markdown
    assert (project / "reports/study/tiny.png").stat().st_size > 0
    assert "| synth - baseline |" in first.stdout  # the table is printed

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synth2")
    study_runs = client.search_runs([experiment.experiment_id], filter_string="tags.`synth2.study` = 'tiny'")
    [parent] = [r for r in study_runs if "mlflow.parentRunId" not in r.data.tags]
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["synth2.seed"] for c in children) == ["0", "1"]
    assert all("test.synth.overall.cider" in c.data.metrics for c in children)

    again = study()  # resumable: nothing left to run
    assert again.returncode == 0 and "2 experiments, 2 already done, 0 to run" in again.stderr
    assert json.loads((project / "reports/study/tiny.json").read_text())["configurations"] == report["configurations"]


def test_a_study_refuses_a_typo_before_queueing_anything(tiny_pipeline: Path, tmp_path: Path):
    project = copy_project(tiny_pipeline, tmp_path / "project")
    command = [str(BIN / "synth2"), "study", "--seeds", "2", "-S", "balance.target_sise=5"]
    result = subprocess.run(command, cwd=project, env=project_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: synth2 study: override 'balance.target_sise': params.yaml has no such key; check its spelling"
    )
