"""`synth2_experiment(overrides)`: one parameter variant as a DVC experiment, recorded in MLflow.

    python -m flows.experiment -S train_vlm.synthetic.mix_ratio=0.25 -S balance.target_size=2000

`dvc exp run` normally applies its result to the workspace (params.yaml, dvc.lock, outputs). The task
runs it with `--temp`, in a temporary copy, so the committed params.yaml and the workspace outputs stay
as they are; the variant lives on as a DVC experiment (`dvc exp show`, `dvc exp apply NAME`). Its stage
runs nest in MLflow under one parent run that carries the overrides as params.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run

from flows.common import (
    TrackedRun,
    dvc_metrics,
    headline_metrics,
    project_root,
    quiet_known_failures,
    read_evaluation,
    summary_markdown,
)
from synth2 import tracking
from synth2.errors import terminate_as_interrupt, user_errors
from synth2.params import Params, parse_with_overrides, read_document
from tasks import run_dvc_experiment


@flow(name="synth2-experiment")
def synth2_experiment(overrides: dict[str, Any], name: str | None = None, root: str | None = None) -> dict[str, Any]:
    """Run the pipeline with `overrides` ({"train_vlm.synthetic.mix_ratio": 0.25, …}) as a DVC experiment."""
    logger = get_run_logger()
    project = project_root(root)
    params_file = project / "params.yaml"
    before = params_file.read_bytes()
    # Validate the variant before DVC copies anything: a typo fails here, in one line naming the -S
    # value at fault (or params.yaml, when the file itself has the mistake).
    params: Params = parse_with_overrides(read_document(params_file), overrides, params_file)
    name = (
        name
        or f"exp-{time.strftime('%Y%m%d-%H%M%S')}-"
        f"{hashlib.sha1(repr(sorted(overrides.items())).encode()).hexdigest()[:6]}"
    )

    flow_run_id = str(flow_run.id) if flow_run.id else None
    run = TrackedRun.start(
        params,
        project,
        f"experiment {name}",
        {
            tracking.TAG_FLOW_RUN: flow_run_id or "",
            tracking.TAG_EXP_NAME: name,
            tracking.TAG_EXECUTION: "prefect dvc exp run",
        },
        {"override": overrides},
    )
    env = run.stage_env(flow_run_id)
    logger.info("experiment %s with %s", name, overrides)
    status = "FAILED"
    metrics: dict[str, Any] = {}
    evaluation = None
    try:
        run_dvc_experiment.with_options(
            retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_s
        )(name, overrides, str(project), env)
        if params_file.read_bytes() != before:  # the point of --temp; say so loudly if DVC ever changes
            raise RuntimeError(f"dvc exp run changed {params_file}; restore it with `git checkout {params_file.name}`")
        metrics = dvc_metrics(project, rev=name)
        evaluation = read_evaluation(project, rev=name)
        status = "FINISHED"
    except (KeyboardInterrupt, TerminationSignal):  # the task stopped `dvc exp run`; the run says why
        status = "KILLED"
        raise
    finally:
        # The parent run carries the headline numbers as the pipeline's does, so that experiments and pipeline
        # runs compare side by side in MLflow.
        run.finish(status, metrics | headline_metrics(evaluation or {}))
        create_markdown_artifact(
            summary_markdown(
                f"synth2 experiment {name}" + ("" if status == "FINISHED" else f" — {status}"),
                [],
                evaluation,
                run,
                extra="Overrides: "
                + ", ".join(f"`{k}={v}`" for k, v in overrides.items())
                + f". Apply with `dvc exp apply {name}`.",
            ),
            key="synth2-experiment-summary",
            description=f"DVC experiment {name}",
        )
    return {"experiment": name, "overrides": overrides, "mlflow_run_id": run.run_id, "metrics": metrics}


def _parse_set(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("-S", "--set", dest="sets", action="append", type=_parse_set, required=True, help="key=value")
    parser.add_argument("--name", help="experiment name (default: exp-<time>-<hash>)")
    args = parser.parse_args(argv)
    terminate_as_interrupt()
    quiet_known_failures()
    with user_errors("synth2 experiment"):
        params_file = project_root(None) / "params.yaml"  # a mistake is one line, before Prefect starts
        parse_with_overrides(read_document(params_file), dict(args.sets), params_file)
        result = synth2_experiment(overrides=dict(args.sets), name=args.name)
    print(f"experiment {result['experiment']}: MLflow run {result['mlflow_run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
