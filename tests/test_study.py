"""`synth2 study` on the tiny world with 2 seeds: DVC experiments, the aggregate with intervals, the reports,
the MLflow runs, and a rerun that finds its experiments done. Plus the statistics on known numbers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from synth2 import paths
from synth2.study import hierarchical_bootstrap, summarise, t_interval
from tests.tiny_project import BIN, copy_project, project_env


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
