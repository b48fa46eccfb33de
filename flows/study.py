"""`synth2_study`: `synth2 study` as a Prefect flow (a deployment in prefect.yaml runs it on demand).

    python -m flows.study --seeds 5 -S train_vlm.synthetic.source_tags=true --name tags

The same engine as the command (synth2.study): the experiments run as DVC experiments through DVC's queue
(resumable: a rerun queues only the missing seeds), then one task aggregates them and writes
reports/study/NAME.{json,md,png}, which the flow also publishes as a markdown artifact.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import project_root, quiet_known_failures
from synth2 import study as engine
from synth2.errors import terminate_as_interrupt, user_errors


@task(name="study-experiments", cache_policy=NO_CACHE)
def run_experiments(study: engine.Study) -> None:
    engine.run_experiments(study)


@task(name="study-report", cache_policy=NO_CACHE)
def report(study: engine.Study, wall_seconds: float) -> dict[str, Any]:
    result = engine.collect(study, wall_seconds)
    outputs = engine.write_reports(result, study.root)
    result["mlflow_run_id"] = engine.log_to_mlflow(result, outputs, study.root)
    result["outputs"] = {k: str(v) for k, v in outputs.items()}
    return result


@flow(name="synth2-study")
def synth2_study(
    seeds: list[int] | int = 5,
    overrides: dict[str, Any] | None = None,
    budgets: list[int] | None = None,
    preset: str | None = None,
    jobs: int = 2,
    name: str = "study",
    root: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline for `seeds` (a count or a list) as DVC experiments and aggregate them."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    study = engine.plan(name, seed_list, overrides, budgets, preset, jobs, project_root(root))
    started = time.perf_counter()
    run_experiments(study)
    result = report(study, time.perf_counter() - started)
    create_markdown_artifact(engine.markdown(result), key=f"synth2-study-{name}", description=f"study {name}")
    get_run_logger().info("study %s: %s", name, result["outputs"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("-S", "--set", dest="sets", action="append", default=[], help="key=value")
    parser.add_argument("--budgets", help="balance.target_size values, e.g. 250,500,1000")
    parser.add_argument("--preset", help="a size overlay of synth2.presets")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--name", default="study")
    args = parser.parse_args(argv)
    terminate_as_interrupt()
    quiet_known_failures()
    with user_errors("synth2 study"):
        overrides = dict(_override(text) for text in args.sets)
        budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else None
        result = synth2_study(args.seeds, overrides, budgets, args.preset, args.jobs, args.name)
    print(engine.markdown(result))
    return 0


def _override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


if __name__ == "__main__":
    sys.exit(main())
