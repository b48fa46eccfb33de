"""Running a study: queue the DVC experiments it lacks, let DVC's queue workers run them, wait, and read
each experiment's evaluation back. All DVC calls go through synth2.dvc_runner.

Each (configuration, seed) is one DVC experiment, `dvc exp run --queue -S seed=N -S ...`, named by the
plan, so a study that is run again finds the experiments it already has (on this commit) and queues only
the rest; `dvc queue start --jobs J` runs them, each in its own copy of the workspace, and DVC's
run-cache restores every stage an earlier experiment already ran with the same code, data and params.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pandas as pd

from synth2 import dvc_runner, paths, stage_server
from synth2.study.plan import Study, StudyError

log = logging.getLogger("synth2")

POLL_SECONDS = 5.0


def run_experiments(study: Study) -> None:
    """Queue the experiments the study lacks, run them with `study.jobs` workers and wait for them."""
    root, wanted = study.root, study.experiments()
    baseline = study.commit  # experiments hang off the commit they were queued on, whatever HEAD is later
    done = dvc_runner.experiment_names(root, baseline) & set(wanted)
    todo = [name for name in wanted if name not in done]
    log.info("study %s: %d experiments, %d already done, %d to run", study.name, len(wanted), len(done), len(todo))
    if not todo:
        return
    stale = [n for n in todo if n in dvc_runner.queue_status(root).tasks]
    if stale:  # queued or failed by an earlier, interrupted attempt: a new attempt needs the name back
        dvc_runner.remove_from_queue(root, stale)
    for name in todo:
        configuration, seed = wanted[name]
        dvc_runner.queue_experiment(root, name, {"seed": seed, **configuration.overrides})
    # The experiments' stages start warm, forked from one stage server (synth2.stage_server) for the study;
    # queue workers already running from an earlier attempt run theirs cold: the same outputs.
    with stage_server.running(root / ".synth2" / "stage_server.log", dvc_runner.environment()) as warm:
        failed = _wait(study, todo, baseline, warm)
    if failed:
        raise StudyError(
            f"{len(failed)} of {len(todo)} experiments failed ({', '.join(failed)}); see `dvc queue logs {failed[0]}`, "
            "fix the cause and run the study again (finished experiments are kept)"
        )


def _wait(study: Study, todo: list[str], baseline: str, env: dict[str, str]) -> list[str]:
    """Poll the queue until every experiment of `todo` finished or failed; the failed ones. `env`: the
    environment of the queue workers it starts."""
    root, started, reported = study.root, time.monotonic(), -1
    while True:
        status = dvc_runner.queue_status(root)
        kept = dvc_runner.experiment_names(root, baseline)
        finished = (kept & set(todo)) | {n for n in todo if status.tasks.get(n) == "Success"}
        failed = sorted(n for n in todo if status.tasks.get(n) == "Failed")
        pending = [n for n in todo if n not in finished and n not in failed]
        if len(finished) + len(failed) != reported:
            reported = len(finished) + len(failed)
            elapsed = time.monotonic() - started
            log.info("study %s: %d/%d experiments finished (%.0f s)", study.name, reported, len(todo), elapsed)
        if not pending:
            return failed
        lost = [n for n in pending if n not in status.tasks]
        if lost:
            raise StudyError(f"experiments {lost} are neither queued, running nor finished; run the study again")
        if status.workers == 0:  # none started yet, or they stopped (e.g. killed): start them, it is idempotent
            dvc_runner.start_workers(root, study.jobs, env)
        time.sleep(POLL_SECONDS)


def read_results(root: Path, name: str) -> tuple[dict, pd.DataFrame]:
    """(metrics/evaluate.json, reports/evaluate/per_image.parquet) of one experiment, with the pixel path's
    variant added to both when the experiment ran it."""
    try:
        metrics = json.loads(dvc_runner.read_file(root, paths.EVAL_METRICS, name))
        per_image = pd.read_parquet(io.BytesIO(dvc_runner.read_file(root, paths.EVAL_PER_IMAGE, name, mode="rb")))
    except Exception as exc:  # DVC raises several types for a missing revision or file
        raise StudyError(f"experiment {name}: cannot read its evaluation ({type(exc).__name__}: {exc})") from None
    for variant in pixel_variants(root, name):  # scored by pixel_vlm, in evaluate's formats
        scores = json.loads(dvc_runner.read_file(root, paths.pixel_vlm_scores(variant), name))
        rows = dvc_runner.read_file(root, paths.pixel_vlm_per_image(variant), name, mode="rb")
        for split, values in scores.items():
            metrics[split][variant] = values
        per_image = pd.concat([per_image, pd.read_parquet(io.BytesIO(rows))], ignore_index=True)
    return metrics, per_image


def pixel_variants(root: Path, name: str) -> list[str]:
    """The pixel path's variants an experiment ran (its params.yaml's pixel_space.variants)."""
    import yaml

    try:
        document = yaml.safe_load(dvc_runner.read_file(root, "params.yaml", name))
    except Exception:  # an experiment without params.yaml cannot have run the pixel path
        return []
    return list((document.get("pixel_space") or {}).get("variants") or [])
