"""Bad inputs and faults on a completed tiny pipeline, through the real entry points (`dvc repro`, the
Prefect flow, `python -m synth2.stages.NAME`, `synth2`): each ends in one line that names the file or key
and the fix, a non-zero exit, no traceback, and the previous outputs byte-identical afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file, save_file

from synth2 import paths
from tests.conftest import write_params
from tests.tiny_project import BIN, copy_project, dvc, project_env, snapshot

pytestmark = pytest.mark.slow
# Everything the pipeline wrote, check_params' own marker included (DVC keeps it while the check runs).
ALL_OUTPUTS = (
    "data",
    "models",
    "metrics",
    "plots",
    "reports/gates",
    "reports/evaluate",
    "reports/params_check.json",
    "dvc.lock",
)


@pytest.fixture
def project(tiny_pipeline: Path, tmp_path: Path) -> Path:
    return copy_project(tiny_pipeline, tmp_path / "project")


def run(root: Path, *argv: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    environment = project_env(**({"SYNTH2_TRACKING": "0"} | env))
    return subprocess.run(list(argv), cwd=root, env=environment, capture_output=True, text=True, timeout=timeout)


def stage(root: Path, name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run(root, sys.executable, "-m", f"synth2.stages.{name}", *args, PYTHONPATH="src", **env)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one `error:` line and no traceback; that line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


def set_param(root: Path, old: str, new: str) -> None:
    params = root / "params.yaml"
    assert old in params.read_text()
    params.write_text(params.read_text().replace(old, new))


# --------------------------------------------------------------------------------------------- params


def test_a_params_mistake_under_dvc_repro_loses_nothing(project: Path):
    before = snapshot(project, *ALL_OUTPUTS)
    original = (project / "params.yaml").read_text()
    set_param(project, "target_size: 80", "target_size: -3")
    line = one_error_line(dvc(project, "repro", SYNTH2_TRACKING="0"))
    assert "stage 'check_params'" in line and "'balance.target_size': -3" in line
    assert snapshot(project, *ALL_OUTPUTS) == before  # the check's own output too (persist)
    (project / "params.yaml").write_text(original)  # fixed: DVC finds nothing to do, nothing deleted
    status = dvc(project, "status", SYNTH2_TRACKING="0")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout


def flow(root: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m flows.MODULE` on the project in `root`, with this checkout's flows and sources."""
    checkout = Path(__file__).parents[1]
    return run(root, sys.executable, "-m", f"flows.{module}", *args, PYTHONPATH=f"{checkout / 'src'}:{checkout}")


def params_mistake_under_every_entry_point(project: Path) -> dict[str, subprocess.CompletedProcess]:
    """The same broken params.yaml under a stage module, the flow (`make run`) and `dvc repro`."""
    return {
        "stage": stage(project, "gate", "real"),
        "flow": flow(project, "pipeline"),
        "dvc": dvc(project, "repro", SYNTH2_TRACKING="0"),
    }


def test_a_duplicated_key_is_named_with_both_lines_and_nothing_changes(project: Path):
    before = snapshot(project, *ALL_OUTPUTS)
    params = project / "params.yaml"
    first = params.read_text().splitlines().index("seed: 0") + 1
    last = len(params.read_text().splitlines()) + 1
    params.write_text(params.read_text() + "seed: 3\n")  # silently the seed, to PyYAML
    results = params_mistake_under_every_entry_point(project)
    expected = f"params.yaml: duplicate key 'seed' at line {last} (first at line {first}); keep one of the two"
    assert one_error_line(results["stage"]) == f"error: stage 'gate_real': {expected}"
    assert one_error_line(results["flow"]) == f"error: synth2 pipeline: {project}/{expected}"
    # DVC reads params.yaml itself, before any stage: its own words. ruamel's C loader (ruamel.yaml.clib, a
    # dependency for its speed) names the duplicate's line and the mapping's start, not the first occurrence.
    dvc_says = results["dvc"].stderr
    assert results["dvc"].returncode != 0
    assert 'duplicate key "seed"' in dvc_says and f"line {last}, column 1" in dvc_says
    assert snapshot(project, *ALL_OUTPUTS) == before


def test_a_missing_params_yaml_is_named_under_every_entry_point(project: Path):
    before = snapshot(project, *ALL_OUTPUTS)
    (project / "params.yaml").unlink()
    results = params_mistake_under_every_entry_point(project)
    expected = "params.yaml not found: run from the project root, or copy params.yaml from the repository"
    assert one_error_line(results["stage"]) == f"error: stage 'gate_real': {expected}"
    assert one_error_line(results["flow"]) == f"error: synth2 pipeline: {project}/{expected}"
    # dvc.yaml names params.yaml in `vars`, so DVC says which file is missing (not "Could not find 'profile'").
    assert results["dvc"].returncode != 0
    assert results["dvc"].stderr.strip() == "ERROR: failed to parse 'vars' in 'dvc.yaml': 'params.yaml' does not exist"
    assert snapshot(project, *ALL_OUTPUTS) == before


def test_an_unknown_profile_is_named_with_its_choices_under_every_entry_point(project: Path):
    before = snapshot(project, *ALL_OUTPUTS)
    set_param(project, "profile: world", "profile: bogus")
    results = params_mistake_under_every_entry_point(project)
    expected = "params.yaml: invalid value for 'profile': 'bogus' (Input should be 'world' or 'coco')"
    assert one_error_line(results["stage"]) == f"error: stage 'gate_real': {expected}"
    assert one_error_line(results["flow"]) == f"error: synth2 pipeline: {project}/{expected}"
    # No dep of check_params names ${profile}: the check runs and says it (not DVC's missing-file error).
    assert one_error_line(results["dvc"]) == f"error: stage 'check_params': {expected}"
    assert snapshot(project, *ALL_OUTPUTS) == before


def test_a_bad_override_is_blamed_on_the_override_not_on_params_yaml(project: Path):
    before = snapshot(project, *ALL_OUTPUTS)
    bad = flow(project, "experiment", "-S", "train_vlm.steps=-1")
    assert one_error_line(bad) == (
        "error: synth2 experiment: -S train_vlm.steps=-1: invalid value for 'train_vlm.steps': -1 "
        "(Input should be greater than 0)"
    )
    typo = flow(project, "experiment", "-S", "train_vlm.stepz=5")
    assert one_error_line(typo) == (
        "error: synth2 experiment: -S 'train_vlm.stepz': params.yaml has no such key; check its spelling"
    )
    assert snapshot(project, *ALL_OUTPUTS) == before


def test_a_params_mistake_under_the_flow_is_one_line_before_prefect_starts(project: Path):
    before = snapshot(project, *ALL_OUTPUTS)
    set_param(project, "unprompted_fraction: 0.2", "unprompted_fraction: 1.5")
    result = run(project, sys.executable, "-m", "flows.pipeline", PYTHONPATH=str(Path(__file__).parents[1]))
    line = one_error_line(result)
    assert line.startswith("error: synth2 pipeline: ") and "'world.caption_lm.unprompted_fraction': 1.5" in line
    assert snapshot(project, *ALL_OUTPUTS) == before


def test_a_bad_torch_thread_count_is_one_line(project: Path):
    line = one_error_line(stage(project, "prior", SYNTH2_TORCH_THREADS="many"))
    assert "SYNTH2_TORCH_THREADS='many'" in line


# ----------------------------------------------------------------------------------- corrupt inputs


def test_corrupt_model_weights_are_named_and_nothing_is_written(project: Path):
    before = snapshot(project, "data/synthetic", "metrics/synthesize.json", "reports/synthesize")
    weights = next((project / paths.PRIOR).rglob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    line = one_error_line(stage(project, "synthesize"))
    assert "models/prior does not hold a loadable prior" in line and "dvc repro prior" in line
    assert snapshot(project, "data/synthetic", "metrics/synthesize.json", "reports/synthesize") == before


def test_no_real_pairs_stops_training_before_anything_is_written(project: Path):
    before = snapshot(project, "models/vlm/baseline", "metrics/train_vlm", "plots/train_vlm")
    real = pd.read_parquet(project / paths.REAL_TRAIN)
    real.head(0).to_parquet(project / paths.REAL_TRAIN, index=False)
    line = one_error_line(stage(project, "train_vlm", "baseline"))
    assert "data/prepared/real_train/table.parquet has no rows" in line and "dvc repro prepare" in line
    assert snapshot(project, "models/vlm/baseline", "metrics/train_vlm", "plots/train_vlm") == before


def test_nan_embeddings_never_become_a_model(project: Path):
    before = snapshot(project, "models/vlm/baseline", "metrics/train_vlm")
    stored = load_file(str(project / paths.REAL_EMBEDDINGS))
    stored["embeddings"][3, 0] = np.nan
    save_file(stored, str(project / paths.REAL_EMBEDDINGS))
    line = one_error_line(stage(project, "train_vlm", "baseline"))
    assert "data/embeddings/real_train.safetensors" in line and "not finite" in line
    assert snapshot(project, "models/vlm/baseline", "metrics/train_vlm") == before


def test_null_captions_in_balance_leave_every_output_as_it_was(project: Path):
    outputs = ("data/selections", "metrics/diversity.json")
    before = snapshot(project, *outputs)
    prompted = pd.read_parquet(project / paths.PROMPTED_CAPTIONS)
    prompted.loc[[1, 4], "caption"] = None  # two captions with no text among good ones
    prompted.to_parquet(project / paths.PROMPTED_CAPTIONS, index=False)
    line = one_error_line(stage(project, "balance"))
    assert line == (
        f"error: stage 'balance': {paths.PROMPTED_CAPTIONS}: 2 of {len(prompted)} rows have no 'caption' "
        "(first rows [1, 4]); re-run 'dvc repro captions' or fix its input"
    )
    assert snapshot(project, *outputs) == before


def test_an_unexpected_error_names_the_stage_and_the_log_with_its_traceback(project: Path):
    test = pd.read_parquet(project / paths.TEST)
    test["references"] = 7  # not a list: scoring cannot work, and no check anticipates it
    test.to_parquet(project / paths.TEST, index=False)
    line = one_error_line(stage(project, "evaluate"))
    assert line.startswith("error: stage 'evaluate': unexpected TypeError:") and "traceback in " in line
    log = Path(line.split("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback (most recent call last)" in log.read_text()
    debug = stage(project, "evaluate", SYNTH2_DEBUG="1")
    assert "Traceback (most recent call last)" in debug.stderr  # the switch that shows it


def test_a_failed_stage_under_the_flow_puts_its_outputs_back(project: Path):
    outputs = ("models/prior", "metrics/prior.json", "plots/prior_loss.csv")
    before = snapshot(project, *outputs)
    repo = str(Path(__file__).parents[1])
    # A fault DVC cannot undo (a corrupt upstream output it would check out again): the stage's environment.
    result = run(
        project,
        *(sys.executable, "-m", "flows.pipeline", "--target", "prior", "--force", "prior"),
        PYTHONPATH=repo,
        SYNTH2_TORCH_THREADS="many",
    )
    line = one_error_line(result)
    assert "stage 'prior'" in line and "SYNTH2_TORCH_THREADS" in line
    assert snapshot(project, *outputs) == before  # DVC had deleted them; the flow put them back


def test_outputs_lost_by_a_killed_attempt_come_back_on_the_next_run(project: Path):
    # What an attempt killed outright (SIGKILL) leaves: DVC deleted the outputs, the backup is still there.
    outputs = ("models/prior", "metrics/prior.json", "plots/prior_loss.csv")
    before = snapshot(project, *outputs)
    backup = project / ".synth2" / "restore" / "prior.99999999.x1"  # a pid no process has
    for out in outputs:
        (backup / out).parent.mkdir(parents=True, exist_ok=True)
        (project / out).rename(backup / out)
    repo = str(Path(__file__).parents[1])
    result = run(project, sys.executable, "-m", "flows.pipeline", "--target", "prior", PYTHONPATH=repo)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "put back outputs an interrupted attempt had lost" in result.stdout + result.stderr
    assert "prior: skipped (unchanged)" in result.stdout + result.stderr  # nothing to redo
    assert snapshot(project, *outputs) == before and not backup.exists()


# ------------------------------------------------------------------------------------- reproducibility


def test_a_forced_gate_rewrites_the_same_report(project: Path):
    report = project / paths.gate_report("real")
    before = report.read_bytes()
    assert dvc(project, "repro", "--force", "--single-item", "gate_real", SYNTH2_TRACKING="0").returncode == 0
    assert report.read_bytes() == before  # no timestamps: dvc.lock and everything downstream unchanged
    status = dvc(project, "status", "--json")
    assert json.loads(status.stdout) == {}


# ---------------------------------------------------------------------------------------- tracking


def test_an_unreachable_tracking_server_costs_nothing_holds_back_no_other_store_and_replays_later(
    project: Path, tmp_path: Path
):
    from mlflow import MlflowClient

    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens
    started = time.perf_counter()
    result = stage(project, "gate", "captions", SYNTH2_TRACKING="1", MLFLOW_TRACKING_URI=unreachable)
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.perf_counter() - started < 120  # no minutes of HTTP retries (not a benchmark: a sanity bound)
    spool = project / ".synth2" / "spool"
    deadline = time.monotonic() + 120
    while not (spool / "unavailable.json").exists() and time.monotonic() < deadline:
        time.sleep(1)  # the background sync tried, failed, kept the run
    assert unreachable in json.loads((spool / "unavailable.json").read_text())
    assert any(p.is_dir() for p in spool.iterdir())
    second = stage(project, "gate", "balanced", SYNTH2_TRACKING="1", MLFLOW_TRACKING_URI=unreachable)
    assert f"the last sync could not send to {unreachable}" in second.stderr

    # A stage recording to the project's own store is neither told nor held back: its sync sends it.
    local = stage(project, "gate", "real", SYNTH2_TRACKING="1")
    assert local.returncode == 0 and "waits in the spool" not in local.stderr, local.stderr[-2000:]
    deadline = time.monotonic() + 120
    while list(spool.glob("*-gate_real")) and time.monotonic() < deadline:
        time.sleep(1)  # the stage's background sync (asking the store meanwhile would race it creating it)
    assert not list(spool.glob("*-gate_real")), (spool / "sync.log").read_text()[-2000:]
    project_store = MlflowClient(f"sqlite:///{project}/mlflow.db")
    sent = project_store.search_runs([project_store.get_experiment_by_name("synth2").experiment_id])
    assert [r.data.tags["synth2.stage"] for r in sent] == ["gate_real"]

    fresh = f"sqlite:///{tmp_path}/fresh.db"
    sync = run(project, str(BIN / "synth2"), "tracking", "sync", "--tracking-uri", fresh)
    assert sync.returncode == 0, sync.stderr
    client = MlflowClient(fresh)
    experiment = client.get_experiment_by_name("synth2")
    stages = {r.data.tags["synth2.stage"] for r in client.search_runs([experiment.experiment_id])}
    assert {"gate_captions", "gate_balanced"} <= stages
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert not [p for p in spool.iterdir() if p.is_dir()]  # sent, so removed


def test_a_killed_stage_run_is_closed_as_killed(project: Path, tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth2.stages.caption_lm"],
        cwd=project,
        env=project_env(SYNTH2_TRACKING="1", MLFLOW_TRACKING_URI=uri, PYTHONPATH="src"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spool = project / ".synth2" / "spool"
    deadline = time.monotonic() + 120
    while not any(p.is_dir() for p in spool.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sync = run(project, str(BIN / "synth2"), "tracking", "sync", "--tracking-uri", uri)
    assert sync.returncode == 0, sync.stderr
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    [killed] = client.search_runs([client.get_experiment_by_name("synth2").experiment_id])
    assert killed.info.status == "KILLED" and killed.data.tags["synth2.stage"] == "caption_lm"


def test_sigterm_to_the_flow_stops_its_stages_and_leaves_nothing_running(project: Path, tmp_path: Path):
    outputs = ("models/caption_lm", "metrics/caption_lm.json")
    before = snapshot(project, *outputs)
    # Training far longer than the wait for its first progress line, so the signal lands mid-training.
    write_params(project, {"world": {"caption_lm": {"steps": 100_000, "n_embd": 64, "batch_size": 32}}})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    repo = str(Path(__file__).parents[1])
    flow = subprocess.Popen(
        [sys.executable, "-m", "flows.pipeline", "--target", "caption_lm", "--force", "caption_lm"],
        cwd=project,
        env=project_env(SYNTH2_TRACKING="1", MLFLOW_TRACKING_URI=uri, PYTHONPATH=repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    for line in flow.stdout:  # wait until the stage is training
        if "caption LM step" in line or time.monotonic() > deadline:
            break
    flow.send_signal(signal.SIGTERM)
    output = flow.communicate(timeout=120)[0]
    assert flow.returncode != 0 and "interrupted" in output
    time.sleep(2)
    import psutil

    leftovers = [p for p in psutil.process_iter(["pid", "environ"]) if _started_in(p, project)]
    assert not leftovers, [p.info["pid"] for p in leftovers]  # no stage, DVC or Prefect server left behind
    assert snapshot(project, *outputs) == before
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("synth2").experiment_id])
    assert runs and all(r.info.status == "KILLED" for r in runs)


def _started_in(process, project: Path) -> bool:
    try:
        return process.cwd() == str(project) and process.pid != os.getpid()
    except Exception:  # gone, or not ours
        return False
