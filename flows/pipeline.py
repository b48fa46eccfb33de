"""`synth2_pipeline`: the DVC stages as Prefect tasks, each started as soon as its upstream stages are done.

    python -m flows.pipeline                     # every stage (ephemeral Prefect, no server needed)
    python -m flows.pipeline --target gate_synthetic --force captions --max-parallel 1

DVC stays authoritative: every stage is reproduced by DVC (`Repo.reproduce(stage, single_item=True)`),
which decides what is stale, runs the command, caches the outputs and writes dvc.lock; outputs and
dvc.lock are the same as a serial `dvc repro`. DVC itself cannot run stages of one workspace in parallel
(treeverse/dvc#755): it releases its repository lock while a stage's command runs and takes it again
around it, so the tasks wait for the lock in those short phases (DVC's own wait, `_wait_for_lock`)
instead of failing. Independent arms of the DAG (caption LM -> captions -> balance, and image encoder ->
prior; the VLM variants) then run at the same time, up to `orchestration.max_parallel` (null: one per
core; `--max-parallel 1` is the serial order).

The stages start warm: DVC runs each stage's command (synth2.launch), which hands the stage to a server
that imported torch, transformers, diffusers and Great Expectations once for this run and forks a process
per stage (synth2.stage_server), instead of each stage spending seconds importing them; the outputs are
the same bytes (`orchestration.warm_start: false` runs them cold).

One `dvc status` first: when nothing is stale the flow ends in seconds without starting a task, and the
command line does not start Prefect (`up_to_date`); `make run` (flows.run) does not even import it: a
no-op costs what `dvc status` costs. The flow opens the parent MLflow run every stage run nests under,
and ends with a markdown artifact: what ran and what was up to date, the headline test numbers and the
champion, the report and the MLflow run to open.

With a DVC remote (`orchestration.pull` / `push`, README "Scaling out") the flow first pulls what its
stages need, before that `dvc status`, so a fresh clone on a worker machine finds up to date every stage
another machine ran and pushed; and it pushes the stages' outs once every stage passed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import TerminationSignal
from prefect.futures import as_completed
from prefect.runtime import flow_run

from flows.common import (
    TrackedRun,
    dvc_metrics,
    headline_metrics,
    load_project_params,
    nothing_ran,
    project_root,
    quiet_known_failures,
    read_evaluation,
    stage_graph,
    stale_stages,
    summary_markdown,
    up_to_date,
)
from synth2 import dvc_runner, paths, stage_server, tracking
from synth2.errors import Synth2Error, terminate_as_interrupt, user_errors
from tasks import run_dvc_stage, stop_children, sync_dvc_remote


def parallelism(configured: int | None) -> int:
    return max(1, configured or os.cpu_count() or 1)


@flow(name="synth2-pipeline")
def synth2_pipeline(
    targets: list[str] | None = None,
    force: list[str] | None = None,
    root: str | None = None,
    max_parallel: int | None = None,
) -> dict[str, Any]:
    """Reproduce `targets` (default: every stage) and their upstream stages through DVC.

    `force`: stages to re-run even when DVC finds them unchanged (e.g. a scheduled retrain).
    `max_parallel`: stages at once (default: `orchestration.max_parallel`)."""
    logger = get_run_logger()
    started = time.perf_counter()
    project = project_root(root)
    params = load_project_params(project)
    graph = stage_graph(project, targets)
    forced = set(force or [])
    unknown = forced - set(graph)
    if unknown:
        raise Synth2Error(f"force names stages outside this run: {sorted(unknown)}; choose from {list(graph)}")
    remote_sync = sync_dvc_remote.with_options(
        retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_s
    )
    if params.orchestration.pull:
        remote_sync("pull", list(graph), str(project), params.orchestration.remote)
    stale = stale_stages(project, graph, forced)
    limit = parallelism(max_parallel or params.orchestration.max_parallel)
    logger.info(
        "%d of %d stages to run, up to %d at once: %s", len(stale), len(graph), limit, ", ".join(stale) or "none"
    )

    outcomes: dict[str, dict[str, Any]] = {
        s: {"stage": s, "ran": False, "seconds": 0.0} for s in graph if s not in stale
    }
    run = None
    status = "FAILED"
    try:
        if stale:
            flow_run_id = str(flow_run.id) if flow_run.id else None
            run = TrackedRun.start(
                params,
                project,
                f"pipeline {flow_run.name or ''}".strip(),
                {tracking.TAG_FLOW_RUN: flow_run_id or "", "synth2.targets": ",".join(targets or ["all"])},
            )
            env = run.stage_env(flow_run_id)
            with warm_stages(params.orchestration.warm_start, project, env) as warm:
                outcomes |= _run_stages(graph, stale, forced, str(project), env | warm, limit, params)
        if params.orchestration.push:  # also what an earlier run produced but did not push
            remote_sync("push", list(graph), str(project), params.orchestration.remote)
        status = "FINISHED"
    except (KeyboardInterrupt, TerminationSignal):  # Ctrl-C; SIGTERM (Prefect's own exception in a flow run)
        status = "KILLED"
        stop_children()  # they put their outputs back and close their runs as KILLED
        raise
    finally:
        metrics = dvc_metrics(project) if status == "FINISHED" else {}
        ordered = [outcomes[s] for s in graph if s in outcomes]
        ran = [o["stage"] for o in ordered if o["ran"]]
        evaluation = read_evaluation(project) if status == "FINISHED" else None
        if run is not None:
            run.finish(status, *_parent_record(ordered, ran, graph, evaluation, project))
            if run.message:
                logger.info("MLflow: %s", run.message)
        title = "synth2 pipeline" + ("" if status == "FINISHED" else f" — {status} after {len(ran)} stage(s)")
        create_markdown_artifact(
            summary_markdown(title, ordered, evaluation, run, report=project / paths.REPORT),
            key="synth2-pipeline-summary",
            description="What ran and what was up to date, the headline numbers, the champion, where to look",
        )
        logger.info("pipeline %s in %.1f s", status.lower(), time.perf_counter() - started)
    return {"stages": ordered, "mlflow_run_id": run.run_id if run else None, "metrics": metrics}


def warm_stages(enabled: bool, project: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[dict[str, str]]:
    """What to add to the stages' environment (`env` on top of this process's) for a warm start
    (`orchestration.warm_start`): a stage server for this run, what it ran and its errors in
    .synth2/stage_server.log; {} runs every stage cold (and a project whose commands do not go through
    synth2.launch needs no server)."""
    if not enabled or "synth2.launch" not in (project / "dvc.yaml").read_text():
        return contextlib.nullcontext({})
    return stage_server.running(project / ".synth2" / "stage_server.log", dvc_runner.environment(env))


def _parent_record(ordered, ran, graph, evaluation, project) -> tuple[dict, dict, list]:
    """(metrics, tags, artifacts) of the parent run: what ran, and, when this run covers them, the
    headline numbers of the evaluation (per variant, test and validation, and the gains over the
    baseline) and the HTML report, so that two pipeline runs compare side by side in MLflow."""
    metrics: dict[str, Any] = {"pipeline": {"stages_ran": len(ran), "stages_skipped": len(ordered) - len(ran)}}
    tags = {"synth2.stages_ran": ",".join(ran) or "none"}
    if evaluation is not None and "evaluate" in graph:
        metrics |= headline_metrics(evaluation)
        if evaluation.get("champion"):
            tags["synth2.champion"] = evaluation["champion"]["variant"]
    report = project / paths.REPORT
    artifacts = [report] if evaluation is not None and "report" in graph and report.is_file() else []
    return metrics, tags, artifacts


def _run_stages(graph, stale, forced, root, env, limit, params) -> dict[str, dict[str, Any]]:
    """Submit each stale stage once its upstream stages are done, at most `limit` at a time."""
    stage_task = run_dvc_stage.with_options(
        retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_s
    )
    todo = [s for s in graph if s in stale]
    done: dict[str, dict[str, Any]] = {}
    running: dict[Any, str] = {}
    failure: BaseException | None = None
    while todo or running:
        ready = [s for s in todo if not (graph[s] & stale) - set(done)]
        while ready and len(running) < limit and failure is None:
            stage = ready.pop(0)
            todo.remove(stage)
            running[stage_task.submit(stage, root, force=stage in forced, env=env)] = stage
        if not running:
            break  # a failure left the rest waiting on stages that will not run
        future = next(as_completed(list(running)))
        stage = running.pop(future)
        try:
            done[stage] = future.result().to_dict()
        except Exception as exc:  # the stage's own one-line error, raised once the running ones end
            failure = failure or exc
    if failure is not None:
        raise failure
    return done


def main(argv: list[str] | None = None, checked: bool = False) -> int:
    """The command line; `checked`: flows.run has just found stale stages (no second `dvc status`)."""
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", dest="targets", help="stage to reproduce (repeatable)")
    parser.add_argument("--force", action="append", help="stage to re-run even if unchanged (repeatable)")
    parser.add_argument("--max-parallel", type=int, help="stages at once (default: orchestration.max_parallel)")
    args = parser.parse_args(argv)
    terminate_as_interrupt()
    quiet_known_failures()
    with user_errors("synth2 pipeline"):
        load_project_params(project_root(None))  # a params mistake is one line, before Prefect starts
        current = None if checked else up_to_date(args.targets, args.force)
        if current is not None:
            print(nothing_ran(current))
            return 0
        result = synth2_pipeline(targets=args.targets, force=args.force, max_parallel=args.max_parallel)
    ran = sum(o["ran"] for o in result["stages"])
    print(
        f"synth2 pipeline: {ran} stage(s) ran, {len(result['stages']) - ran} skipped; "
        f"MLflow run {result['mlflow_run_id']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
