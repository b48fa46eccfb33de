"""`synth2_study`: `synth2 study` as a Prefect flow (a deployment in prefect.yaml runs it on demand).

    python -m flows.study --seeds 5 -S train_vlm.synthetic.source_tags=true --name tags

The same command line as `synth2 study` (synth2.study.arguments) and the same engine (synth2.study): the
experiments run as DVC experiments through DVC's queue (resumable: a rerun queues only the missing
seeds), then one task aggregates them and writes reports/study/NAME.{json,md,png}, which the flow also
publishes as a markdown artifact. The flow's parameters take what the command line takes: seeds as a
count or a list, overrides as KEY=VALUE strings or a mapping, the sweep as "KEY=V1,V2" or
{"key": KEY, "values": [V1, V2]}, budgets (the sweep of balance.target_size) as "250,500" or a list.

    python -m flows.study --sweep world.prepare.real_train_size=250,500,1000,2000 --name human-pairs
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import project_root, quiet_known_failures
from synth2.errors import terminate_as_interrupt, user_errors
from synth2.study import run, workflow
from synth2.study.arguments import StudyArguments, add_arguments
from synth2.study.plan import Study, plan
from synth2.study.report import markdown


@task(name="study-experiments", cache_policy=NO_CACHE)
def run_experiments(study: Study) -> None:
    run.run_experiments(study)


@task(name="study-report", cache_policy=NO_CACHE)
def report(study: Study, wall_seconds: float) -> dict[str, Any]:
    return workflow.report_study(study, wall_seconds)


def plan_study(
    seeds: list[int] | int | str = 5,
    overrides: dict[str, Any] | list[str] | None = None,
    budgets: list[int] | str | None = None,
    preset: str | None = None,
    jobs: int = 2,
    name: str = "study",
    root: str | None = None,
    sweep: dict[str, Any] | str | None = None,
) -> Study:
    """The flow's parameters through the command line's conversion, then the study's plan."""
    arguments = StudyArguments.from_parameters(seeds, overrides, budgets, preset, jobs, name, sweep=sweep)
    return plan(arguments, project_root(root))


@flow(name="synth2-study")
def synth2_study(
    seeds: list[int] | int | str = 5,
    overrides: dict[str, Any] | list[str] | None = None,
    budgets: list[int] | str | None = None,
    preset: str | None = None,
    jobs: int = 2,
    name: str = "study",
    root: str | None = None,
    sweep: dict[str, Any] | str | None = None,
) -> dict[str, Any]:
    """Run the pipeline for `seeds` (a count or a list) as DVC experiments and aggregate them."""
    study = plan_study(seeds, overrides, budgets, preset, jobs, name, root, sweep)
    started = time.perf_counter()
    run_experiments(study)
    result = report(study, time.perf_counter() - started)
    create_markdown_artifact(markdown(result), key=f"synth2-study-{name}", description=f"study {name}")
    get_run_logger().info("study %s: %s", name, result["outputs"])
    return result


def parameters_from_command_line(argv: list[str] | None = None) -> Mapping[str, Any]:
    """`synth2 study`'s arguments as the flow's parameters; a bad value fails here, before Prefect starts."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m flows.study", description=__doc__.split("\n\n")[0]))
    return asdict(StudyArguments.from_namespace(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    terminate_as_interrupt()
    quiet_known_failures()
    with user_errors("synth2 study"):
        result = synth2_study(**parameters_from_command_line(argv))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
