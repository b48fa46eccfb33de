"""The registry's `champion` alias moves only on evidence (synth2.tracking.champion): a stage in synth2's
stage frame registers its variants with their per-image validation scores, the spool is sent to a real
sqlite MLflow store, and the alias moves only when the new best variant's margin over the current
champion, paired by validation image, has a 95% bootstrap interval above 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synth2.bootstrap import paired_bootstrap
from tests.conftest import write_params
from tests.dvc_project import dvc

REGISTERED = "synth2-vlm"
METRIC = "val.unseen.attr_all"
MARGIN = f"{METRIC}.margin_over_champion"

# What evaluate does at its end, with the scores handed in: each variant's model directory written (its
# bytes name the run, so each run registers new versions), then registration and the champion decision.
PUBLISH = """
import json, sys
from pathlib import Path
from synth2 import tracking
from synth2.io import atomic_path
from synth2.stage import stage_main

def run(params):
    release, scores_file, table = sys.argv[1:4]
    per_image = json.loads(Path(scores_file).read_text())
    for variant in per_image:
        with atomic_path(f"models/{variant}") as tmp:
            tmp.mkdir()
            (tmp / "weights.txt").write_text(f"{release} {variant}")
    per_image = {v: {int(i): s for i, s in scores.items()} for v, scores in per_image.items()}
    models = {v: f"models/{v}" for v in per_image}
    tracking.promote_best(models, per_image, "val.unseen.attr_all", params.tracking.registered_model, table)

stage_main("evaluate", run)()
"""

IMAGES = 200
rng = np.random.default_rng(7)
BASE = rng.uniform(0.2, 0.8, IMAGES)  # the first champion's per-image scores


def scores(values: np.ndarray) -> dict[str, float]:
    """{image id: score}, image ids 1000.. in a shuffled order: pairing must go by id, not by position."""
    ids = np.arange(1000, 1000 + IMAGES)
    order = np.random.default_rng(len(values) + int(values.sum() * 1000)).permutation(IMAGES)
    return {str(ids[i]): float(values[i]) for i in order}


def without_first(per_image: dict[str, float]) -> dict[str, float]:
    return {i: score for i, score in per_image.items() if i != "1000"}


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        write_params(root)
        dvc(root, "init", "--no-scm", "-q")  # DVC md5s: the same bytes keep their registry version
        (root / "publish.py").write_text(PUBLISH)
        (root / "val.parquet").write_bytes(b"the validation table")

    def publish(self, release: str, per_image: dict[str, dict[str, float]], table: str = "val.parquet"):
        """Run the stage; (its MLflow run, the stage's stderr)."""
        from mlflow import MlflowClient

        (self.root / "scores.json").write_text(json.dumps(per_image))
        env = os.environ | {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "SYNTH2_TRACKING": "1",
            "SYNTH2_TRACKING_STRICT": "1",  # the sync runs inline: the decision is in the stage's own log
        }
        command = [sys.executable, "publish.py", release, "scores.json", table]
        result = subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name("synth2").experiment_id
        run = client.search_runs([experiment], order_by=["attributes.start_time DESC"], max_results=1)[0]
        return run, result.stderr

    def champion(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri).get_model_version_by_alias(REGISTERED, "champion")


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> dict:
    """One registry, five evaluate runs in turn; each step's run, stage log and champion afterwards."""
    project = Project(tmp_path_factory.mktemp("champion"))
    noise = np.random.default_rng(11).normal(0, 0.2, IMAGES)
    steps = {
        "first": ("r1", {"baseline": scores(BASE - 0.1), "synth": scores(BASE)}),
        # r2's synth beats r1's by 0.15 on the mean, well beyond the noise of its images.
        "clear": ("r2", {"baseline": scores(BASE), "synth": scores(BASE + 0.15 + noise / 2)}),
        # r3's best beats r2's champion on the mean by a hair, image by image both ways: noise.
        # One image fewer (the first): scores pair by image id, never by position.
        "noise": ("r3", {"baseline": scores(BASE), "synth": without_first(scores(BASE + 0.155 + noise[::-1] / 2))}),
        # r2's bytes again, the champion's own version.
        "again": ("r2", {"baseline": scores(BASE), "synth": scores(BASE + 0.15 + noise / 2)}),
    }
    history = {}
    for step, (release, per_image) in steps.items():
        run, log = project.publish(release, per_image)
        history[step] = {"run": run, "log": log, "champion": project.champion(), "scores": per_image}
    # Far better, but scored on another validation table: nothing to pair with.
    (project.root / "other.parquet").write_bytes(b"another validation table")
    run, log = project.publish("r4", {"synth": scores(BASE + 0.5)}, "other.parquet")
    history["other_set"] = {"run": run, "log": log, "champion": project.champion()}
    history["project"] = project
    return history


def test_the_first_registration_just_sets_the_alias(history):
    step = history["first"]
    tags = step["run"].data.tags
    assert step["champion"].tags["variant"] == "synth" and tags["synth2.champion.moved"] == "true"
    version = step["champion"].version
    assert tags["synth2.champion.reason"] == f"synth (v{version}) is the first champion of {REGISTERED}"
    assert not any(key.startswith(MARGIN) for key in step["run"].data.metrics)


def test_a_clear_margin_moves_the_alias(history):
    before, step = history["first"]["champion"], history["clear"]
    moved_to = step["champion"]
    assert moved_to.version != before.version and moved_to.tags["variant"] == "synth"
    assert moved_to.tags["synth2.validation_scores.run"] == step["run"].info.run_id
    metrics, tags = step["run"].data.metrics, step["run"].data.tags
    assert metrics[f"{MARGIN}.ci95_low"] > 0 and tags["synth2.champion.moved"] == "true"
    assert tags["synth2.champion.reason"].endswith("above 0: it becomes the champion")
    assert f"champion: {tags['synth2.champion.reason']}" in step["log"]  # the stage's log says it too


def test_a_margin_within_noise_leaves_the_alias_and_says_why(history):
    before, step = history["clear"]["champion"], history["noise"]
    assert step["champion"].version == before.version
    metrics, tags = step["run"].data.metrics, step["run"].data.tags
    low, high = metrics[f"{MARGIN}.ci95_low"], metrics[f"{MARGIN}.ci95_high"]
    assert metrics[MARGIN] > 0 and low < 0 < high  # better on the mean, but not beyond the noise
    reason = tags["synth2.champion.reason"]
    assert tags["synth2.champion.moved"] == "false" and tags["synth2.champion"] == f"v{before.version}"
    assert reason.startswith(f"synth (v{int(before.version) + 2}) vs the champion v{before.version} on {METRIC}: ")
    assert f"margin {metrics[MARGIN]:+.4g}, 95% bootstrap interval over {IMAGES - 1} validation images " in reason
    assert f"[{low:+.4g}, {high:+.4g}], not above 0: the alias stays on v{before.version}" in reason
    assert f"champion: {reason}" in step["log"]


def test_the_interval_is_logged_with_the_metric_paired_by_image_and_reproducible(history):
    """The margin and its interval are the paired bootstrap of the two variants' scores matched by image id
    (each run lists its images in another order), with the fixed seed."""
    ours, theirs = history["noise"]["scores"]["synth"], history["clear"]["scores"]["synth"]
    ids = sorted(set(ours) & set(theirs))
    a, b = np.array([ours[i] for i in ids]), np.array([theirs[i] for i in ids])
    metrics = history["noise"]["run"].data.metrics
    assert metrics[MARGIN] == pytest.approx(float(np.mean(a - b)))
    assert (metrics[f"{MARGIN}.ci95_low"], metrics[f"{MARGIN}.ci95_high"]) == paired_bootstrap(a, b, seed=0)


def test_the_champion_rebuilt_keeps_the_alias_and_its_scores_are_logged(history):
    from mlflow import MlflowClient

    step = history["again"]
    assert step["champion"].version == history["clear"]["champion"].version
    reason = step["run"].data.tags["synth2.champion.reason"]
    assert reason == f"synth (v{step['champion'].version}) is the champion already"
    client = MlflowClient(history["project"].uri)
    logged = json.loads(
        Path(client.download_artifacts(step["run"].info.run_id, "champion/validation_scores.json")).read_text()
    )
    assert logged["metric"] == METRIC and logged["scores"] == step["scores"]


def test_scores_on_another_validation_set_leave_the_alias_and_say_why(history):
    step = history["other_set"]
    assert step["champion"].version == history["again"]["champion"].version
    reason = step["run"].data.tags["synth2.champion.reason"]
    assert f"v{step['champion'].version}, the current champion, was scored on another validation set" in reason
    assert "set it by hand in MLflow" in reason and not any(k.startswith(MARGIN) for k in step["run"].data.metrics)
