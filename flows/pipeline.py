"""`synth2_pipeline`: the DVC stages in DAG order as Prefect tasks, one MLflow run around them.

    python -m flows.pipeline                     # every stage (ephemeral Prefect, no server needed)
    python -m flows.pipeline --target gate_synthetic --force captions

DVC decides what is stale; each task reports whether DVC ran or skipped its stage. The flow opens the
parent MLflow run that every stage run nests under, and ends with a markdown artifact: stages ran and
skipped, key metrics from the DVC metrics files, and the MLflow run to open.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.common import TrackedRun, dvc_metrics, load_project_params, project_root, stage_order, summary_markdown
from synth2 import tracking
from tasks import run_dvc_stage


@flow(name="synth2-pipeline")
def synth2_pipeline(
    targets: list[str] | None = None, force: list[str] | None = None, root: str | None = None
) -> dict[str, Any]:
    """Reproduce `targets` (default: every stage) and their upstream stages through DVC.

    `force`: stages to re-run even when DVC finds them unchanged (e.g. a scheduled retrain)."""
    logger = get_run_logger()
    project = project_root(root)
    params = load_project_params(project)
    order = stage_order(project, targets)
    forced = set(force or [])
    unknown = forced - set(order)
    if unknown:
        raise ValueError(f"force names stages outside this run: {sorted(unknown)}")
    stage_task = run_dvc_stage.with_options(
        retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_s
    )

    flow_run_id = str(flow_run.id) if flow_run.id else None
    run = TrackedRun.start(
        params,
        project,
        f"pipeline {flow_run.name or ''}".strip(),
        {tracking.TAG_FLOW_RUN: flow_run_id or "", "synth2.targets": ",".join(targets or ["all"])},
    )
    env = run.stage_env(flow_run_id)
    logger.info("stages in order: %s", ", ".join(order))

    outcomes: list[dict[str, Any]] = []
    status = "FAILED"
    try:
        for stage in order:  # sequential on purpose: DVC locks the workspace
            outcomes.append(stage_task(stage, str(project), force=stage in forced, env=env).to_dict())
        status = "FINISHED"
    finally:
        metrics = dvc_metrics(project) if status == "FINISHED" else {}
        ran = [o["stage"] for o in outcomes if o["ran"]]
        run.finish(
            status,
            {"pipeline": {"stages_ran": len(ran), "stages_skipped": len(outcomes) - len(ran)}},
            {"synth2.stages_ran": ",".join(ran) or "none"},
        )
        if run.message:
            logger.info("MLflow: %s", run.message)
        title = "synth2 pipeline" + ("" if status == "FINISHED" else f" — FAILED after {len(outcomes)} stage(s)")
        create_markdown_artifact(
            summary_markdown(title, outcomes, metrics, run),
            key="synth2-pipeline-summary",
            description="Stages ran/skipped, key metrics, MLflow run",
        )
    return {"stages": outcomes, "mlflow_run_id": run.run_id, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", dest="targets", help="stage to reproduce (repeatable)")
    parser.add_argument("--force", action="append", help="stage to re-run even if unchanged (repeatable)")
    args = parser.parse_args(argv)
    result = synth2_pipeline(targets=args.targets, force=args.force)
    ran = sum(o["ran"] for o in result["stages"])
    print(
        f"synth2 pipeline: {ran} stage(s) ran, {len(result['stages']) - ran} skipped; "
        f"MLflow run {result['mlflow_run_id']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
