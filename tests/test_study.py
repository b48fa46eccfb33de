"""`synth2 study` on the tiny world, two sizes of the human pairs x 2 seeds: DVC experiments, the
aggregate with intervals, the reports, the savings and heatmaps, nested data, the MLflow runs, and a rerun
that finds its experiments done. Plus the statistics on known numbers, the one command line shared by
`synth2 study` and `python -m flows.study`, the plan of a sweep (`--sweep`, and `--budgets` as its
shorthand), and the study's MLflow runs. The savings factor on hand-made tables: tests/test_savings.py."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synth2 import paths
from synth2.study.arguments import StudyArguments
from synth2.study.plan import StudyError, Sweep, plan
from synth2.study.stats import hierarchical_bootstrap, summarise, t_interval
from tests.dvc_project import make_project
from tests.tiny_project import BIN, copy_project, project_env

STUDY_ARGV = ["--seeds", "0,3", "-S", "train_vlm.synthetic.source_tags=true", "--budgets", "250,500"]
STUDY_ARGV += ["--preset", "tiny", "--jobs", "1", "--name", "same"]
NO_EQUALS = "error: synth2 study: -S 'foo': expected KEY=VALUE, e.g. -S balance.target_size=500\n"
PAIRS = "world.prepare.real_train_size"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """One committed project (the repository's params.yaml) for the tests that only plan studies."""
    return make_project(tmp_path_factory.mktemp("plans") / "project")


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
    assert [c.label for c in from_cli.configurations] == ["balance.target_size=250", "balance.target_size=500"]
    assert all(c.overrides["train_vlm.synthetic.source_tags"] is True for c in from_cli.configurations)
    # Seeds as a count, in either form.
    assert plan_study(seeds=3).seeds == plan_study(seeds="3").seeds == [0, 1, 2]
    assert plan_study(seeds="7,").seeds == [7]


def test_a_sweep_runs_every_value_with_every_seed(project, monkeypatch):
    from flows.study import parameters_from_command_line, plan_study
    from synth2.cli import build_parser

    monkeypatch.chdir(project)
    argv = ["--sweep", f"{PAIRS}=250,500", "--seeds", "0,1", "-S", "balance.target_size=100", "--name", "pairs"]
    study = plan(StudyArguments.from_namespace(build_parser().parse_args(["study", *argv])))
    assert study.sweep == Sweep(PAIRS, [250, 500])  # values read as YAML: integers
    assert [(c.label, c.value) for c in study.configurations] == [(f"{PAIRS}=250", 250), (f"{PAIRS}=500", 500)]
    assert [c.overrides for c in study.configurations] == [
        {"balance.target_size": 100, PAIRS: 250},
        {"balance.target_size": 100, PAIRS: 500},
    ]
    experiments = study.experiments()  # every value x every seed; the seeds are the same for every value
    assert sorted((c.value, seed) for c, seed in experiments.values()) == [(250, 0), (250, 1), (500, 0), (500, 1)]
    assert all(re.fullmatch(r"pairs-[0-9a-f]{6}-s[01]", name) for name in experiments)
    assert len({name.rsplit("-", 1)[0] for name in experiments}) == 2  # one hash per value
    # The flow: the command line's strings, and a deployment's typed sweep (the shape the report records).
    assert plan_study(**parameters_from_command_line(argv)) == study
    typed = {"key": PAIRS, "values": [250, 500]}
    assert plan_study(seeds=[0, 1], overrides={"balance.target_size": 100}, name="pairs", sweep=typed) == study
    # A preset's value of the swept key gives way to the sweep's.
    tiny = plan(StudyArguments.from_parameters(2, preset="tiny", sweep=f"{PAIRS}=250,500"))
    assert [c.overrides[PAIRS] for c in tiny.configurations] == [250, 500]
    # YAML scalars, as -S values are.
    fractions = plan(StudyArguments.from_parameters(2, sweep="world.caption_lm.human_style_fraction=0, 0.25"))
    assert fractions.sweep.values == [0, 0.25]


def test_budgets_are_the_sweep_of_the_target_size_with_the_same_experiments(project, monkeypatch):
    monkeypatch.chdir(project)
    budgets = plan(StudyArguments.from_parameters([0, 1], budgets="250,500", name="b"))
    assert budgets == plan(StudyArguments.from_parameters([0, 1], sweep="balance.target_size=250,500", name="b"))
    assert budgets.sweep == Sweep("balance.target_size", [250, 500])
    # The committed budget study (run before --sweep existed) is found again: same overrides, same names.
    report = json.loads((Path(__file__).parents[1] / "reports/study/budget.json").read_text())
    [configuration] = report["configurations"]
    overrides = {k: v for k, v in configuration["overrides"].items() if k != "balance.target_size"}
    again = plan(StudyArguments.from_parameters(report["seeds"], overrides, budgets="500", name=report["name"]))
    [planned] = again.configurations
    assert planned.overrides == configuration["overrides"]
    assert {str(s): planned.experiment("budget", s) for s in again.seeds} == configuration["experiments"]


SWEEP_ERRORS = [
    (
        ["--sweep", "world.prepare.real_train_sise=250,500"],
        "--sweep 'world.prepare.real_train_sise': params.yaml has no such key; check its spelling",
    ),
    (
        ["--sweep", "world.prepars.real_train_size=250"],
        "--sweep 'world.prepars.real_train_size': params.yaml has no section 'prepars'",
    ),
    (["--sweep", f"{PAIRS}=250,abc"], f"--sweep {PAIRS}='abc': "),
    (["--sweep", f"{PAIRS}=250,-5"], f"--sweep {PAIRS}=-5: "),
    (["--sweep", f"{PAIRS}"], f"--sweep '{PAIRS}': expected KEY=V1,V2,..., e.g. --sweep {PAIRS}=500,1000,2000"),
    (["--sweep", f"{PAIRS}=250,[1"], f"--sweep {PAIRS}: value '[1' is not a YAML scalar"),
    (["--sweep", f"{PAIRS}=250,250"], f"--sweep {PAIRS}: value 250 is given twice"),
    (["--sweep", "seed=1,2"], "the study sets 'seed' itself; choose seeds with --seeds"),
    (
        ["--sweep", f"{PAIRS}=250", "-S", f"{PAIRS}=500"],
        f"--sweep {PAIRS}: also set with -S; give its values in one place",
    ),
    (["--sweep", f"{PAIRS}=250", "--sweep", f"{PAIRS}=500"], "--sweep given 2 times: one sweep per study"),
    (
        ["--sweep", f"{PAIRS}=250,500", "--budgets", "250"],
        "--sweep and --budgets: one sweep per study (--budgets 250,500 is --sweep balance.target_size=250,500)",
    ),
]


@pytest.mark.parametrize(
    ("argv", "message"), SWEEP_ERRORS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(SWEEP_ERRORS)]
)
def test_a_bad_sweep_fails_in_one_line_naming_it_from_the_cli_and_the_flow(argv, message, project, monkeypatch, capsys):
    from flows.study import parameters_from_command_line, plan_study
    from synth2 import cli

    monkeypatch.chdir(project)  # a committed project: nothing but the sweep is wrong
    with pytest.raises(SystemExit) as exited:
        cli.main(["study", *argv])
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: synth2 study: {message}") and error.count("\n") == 1
    with pytest.raises(StudyError) as raised:  # the flow's parameters, as the command line gives them
        plan_study(**parameters_from_command_line(argv))
    assert f"error: synth2 study: {raised.value}\n" == error


def test_a_typed_sweep_of_the_flow_fails_like_its_string(project, monkeypatch):
    from flows.study import plan_study

    monkeypatch.chdir(project)
    for typed, text in (
        ({"key": PAIRS, "values": [250, "abc"]}, f"{PAIRS}=250,abc"),
        ({"key": "world.prepare.real_train_sise", "values": [250]}, "world.prepare.real_train_sise=250"),
    ):
        with pytest.raises(StudyError) as from_typed:
            plan_study(sweep=typed)
        with pytest.raises(StudyError) as from_text:
            plan_study(sweep=text)
        assert str(from_typed.value) == str(from_text.value)
    with pytest.raises(StudyError, match=r"expected \{'key': KEY, 'values': \[V1, V2, ...\]\}"):
        plan_study(sweep={PAIRS: [250, 500]})
    with pytest.raises(StudyError, match="one sweep per study"):
        plan_study(sweep=f"{PAIRS}=250", budgets=[250])


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
def test_a_two_seed_sweep_of_the_human_pairs_on_the_tiny_world(tiny_pipeline: Path, tmp_path: Path):
    """Two sizes x two seeds, as DVC experiments: the report with intervals, the savings, the heatmaps, nested
    human pairs on identical test sets, the image encoder trained once per seed, MLflow runs, resumable."""
    project = copy_project(tiny_pipeline, tmp_path / "project")
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def study() -> subprocess.CompletedProcess:
        command = [str(BIN / "synth2"), "study", "--seeds", "0,1", "--jobs", "2", "--name", "tiny"]
        command += ["--sweep", f"{PAIRS}=100,200"]  # 200: the tiny pipeline's own size
        env = project_env(SYNTH2_TRACKING="1", MLFLOW_TRACKING_URI=uri)
        return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=1500)

    first = study()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "4 experiments, 0 already done, 4 to run" in first.stderr
    report = json.loads((project / "reports/study/tiny.json").read_text())
    assert report["seeds"] == [0, 1] and report["sweep"] == {"key": PAIRS, "values": [100, 200]}
    small, full = report["configurations"]
    assert set(full["experiments"]) == {"0", "1"} and (small["value"], full["value"]) == (100, 200)
    # Seed 0 at 200 pairs is the pipeline the project already reproduced: the same numbers.
    committed = json.loads((project / paths.EVAL_METRICS).read_text())
    cider = full["summary"]["test"]["synth"]["overall"]["cider"]
    assert cider["values"][0] == committed["test"]["synth"]["overall"]["cider"]
    assert cider["n"] == 2 and cider["ci95"][0] <= cider["mean"] <= cider["ci95"][1]
    difference = full["differences"]["synth - baseline"]["test"]["unseen"]["attr_colour_shape"]
    assert set(difference) >= {"mean", "ci95", "bootstrap_ci95", "relative_to_minus", "values"}
    assert len(full["differences"]["balanced - unbalanced"]["val"]["overall"]["cider"]["values"]) == 2
    # The data-efficiency answer: the full-data baseline is the 200-pair mean.
    savings = report["savings"]["overall.cider"]
    assert (
        savings["full_size"] == 200
        and savings["target"] == full["summary"]["test"]["baseline"]["overall"]["cider"]["mean"]
    )
    assert [row["size"] for row in savings["per_size"]] == [100, 200]
    # The heatmaps: one seed's grids per size; the same world, so the same held-out cells.
    assert small["colour_shape"]["seed"] == 0 and small["colour_shape"]["held_out"] == full["colour_shape"]["held_out"]
    assert sum(map(sum, full["colour_shape"]["held_out"])) == 12
    markdown = (project / "reports/study/tiny.md").read_text()
    assert "| synth | unseen |" in markdown and "Paired differences" in markdown and "Data efficiency" in markdown
    for suffix in ("png", "efficiency.png", "heatmap.png"):
        assert (project / f"reports/study/tiny.{suffix}").stat().st_size > 0
    assert "| synth - baseline |" in first.stdout  # the table is printed

    # Nested human pairs on identical evaluation sets, across the experiments of one seed.
    from synth2 import dvc_runner

    def read(size: dict, seed: str, path: Path) -> bytes:
        return dvc_runner.read_file(project, path, size["experiments"][seed], mode="rb")

    for seed in ("0", "1"):
        for name in ("unlabeled_pool", "val", "test"):
            assert read(small, seed, paths.image_pixels(name)) == read(full, seed, paths.image_pixels(name))
            assert read(small, seed, paths.image_table(name)) == read(full, seed, paths.image_table(name))
        tables = [pd.read_parquet(io.BytesIO(read(size, seed, paths.REAL_TRAIN))) for size in (small, full)]
        pd.testing.assert_frame_equal(tables[0], tables[1].head(100))
    # The image encoder (trained on the pool) ran once: for seed 1; seed 0's is the project's own.
    logs = [
        subprocess.run([str(BIN / "dvc"), "queue", "logs", name], cwd=project, capture_output=True, text=True).stdout
        for configuration in (small, full)
        for name in configuration["experiments"].values()
    ]
    assert sum(log.count("Running stage 'image_encoder'") for log in logs) == 1, logs

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synth2")
    study_runs = client.search_runs([experiment.experiment_id], filter_string="tags.`synth2.study` = 'tiny'")
    [parent] = [r for r in study_runs if "mlflow.parentRunId" not in r.data.tags]
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["synth2.seed"] for c in children) == ["0", "0", "1", "1"]
    assert all("test.synth.overall.cider" in c.data.metrics for c in children)

    again = study()  # resumable: nothing left to run
    assert again.returncode == 0 and "4 experiments, 4 already done, 0 to run" in again.stderr
    assert json.loads((project / "reports/study/tiny.json").read_text())["configurations"] == report["configurations"]


def test_a_study_refuses_a_typo_before_queueing_anything(tiny_pipeline: Path, tmp_path: Path):
    project = copy_project(tiny_pipeline, tmp_path / "project")
    command = [str(BIN / "synth2"), "study", "--seeds", "2", "-S", "balance.target_sise=5"]
    result = subprocess.run(command, cwd=project, env=project_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: synth2 study: -S 'balance.target_sise': params.yaml has no such key; check its spelling"
    )


def _scored(cider: dict[str, float], seed: int) -> tuple[dict, pd.DataFrame]:
    """One experiment's evaluation, hand-made: per variant, an overall CIDEr per image of 10 test images
    (the variant's mean, with noise shared by every variant of the seed) and the same on val."""
    noise = np.random.default_rng(seed).normal(0, 0.05, 10)
    rows = [
        {"split": split, "subset": "overall", "variant": variant, "image_id": i, "cider": mean + noise[i]}
        for split in ("val", "test")
        for variant, mean in cider.items()
        for i in range(10)
    ]
    frame = pd.DataFrame(rows)
    means = frame.groupby(["split", "variant"])["cider"].mean()
    metrics = {s: {v: {"overall": {"cider": float(means[s, v])}} for v in cider} for s in ("val", "test")}
    return metrics, frame


def test_a_sweep_pairs_each_value_with_the_first_for_the_variants_it_changed():
    from synth2.study.report import markdown
    from synth2.study.stats import sweep_differences

    seeds = (0, 1, 2)
    accumulate = {s: _scored({"baseline": 0.5, "synth_r2": 0.8 + 0.01 * s}, s) for s in seeds}
    # replace: round 2 lower by 0.1 in every seed; the baseline untouched; a round only replace ran.
    replace = {s: _scored({"baseline": 0.5, "synth_r2": 0.7 + 0.01 * s, "synth_r3": 0.9}, s) for s in seeds}
    variants = ["baseline", "synth_r2", "synth_r3"]
    differences = sweep_differences({"accumulate": accumulate, "replace": replace}, variants)
    assert list(differences) == ["synth_r2: replace - accumulate"]
    test = differences["synth_r2: replace - accumulate"]["test"]["overall"]["cider"]
    assert test["values"] == pytest.approx([-0.1] * 3) and test["mean"] == pytest.approx(-0.1)
    assert test["bootstrap_ci95"] == pytest.approx([-0.1, -0.1])  # paired by image: the noise cancels
    assert sweep_differences({"accumulate": accumulate, "again": accumulate}, ["baseline", "synth_r2"]) == {}

    report = {
        "name": "modes",
        "seeds": list(seeds),
        "commit": "0" * 40,
        "wall_seconds": 60.0,
        "sweep": {"key": "self_improve.mode", "values": ["accumulate", "replace"]},
        "configurations": [],
        "sweep_differences": differences,
    }
    text = markdown(report)
    assert "## Between the values of `self_improve.mode`" in text
    assert "| synth_r2: replace - accumulate | overall | CIDEr | -0.100 |" in text
