"""A study from plan to reports, in the order both entry points run it: the experiments
(synth2.study.run), then their aggregate (synth2.study.stats) written as reports (synth2.study.report)
and logged to MLflow (synth2.study.mlflow_runs)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from synth2 import tracking
from synth2.pipeline import PIXEL_COMPARISONS
from synth2.study.mlflow_runs import log_to_mlflow
from synth2.study.plan import Study
from synth2.study.report import write_reports
from synth2.study.rounds import experiment_rounds, read_rounds, round_differences, round_figures, with_rounds
from synth2.study.run import read_results, run_experiments
from synth2.study.savings import HUMAN_PAIRS_KEY, data_efficiency
from synth2.study.speed import pixel_speed
from synth2.study.stats import DIFFERENCES, VARIANTS, aggregate, comparisons_present, sweep_differences
from synth2.world.heatmap import colour_shape_accuracy

log = logging.getLogger("synth2")


def collect(study: Study, wall_seconds: float) -> dict[str, Any]:
    """Aggregate every configuration's experiments into the study report (JSON-ready): with a sweep, one
    configuration per value (its `value`), and for a sweep of the human pairs the data-efficiency answer
    (`savings`, synth2.study.savings); any other sweep, each value against the first per variant it changed
    (`sweep_differences`)."""
    configurations, results_by_value, variants_seen = [], {}, []
    for configuration in study.configurations:
        names = {seed: configuration.experiment(study.name, seed) for seed in study.seeds}
        results, round_reports = {}, {}
        for seed, name in names.items():
            rounds = experiment_rounds(study.root, name)  # the same in every seed: one configuration
            round_reports[seed], round_rows = read_rounds(study.root, name, rounds)
            results[seed] = with_rounds(*read_results(study.root, name), round_reports[seed], round_rows)
        entry = {"label": configuration.label, "overrides": configuration.overrides, "experiments": names}
        if rounds:
            entry["rounds"] = {"chain": rounds, "figures": round_figures([round_reports[s] for s in study.seeds])}
        if study.sweep:
            entry["value"] = configuration.value
        first_seed_images = results[study.seeds[0]][1]
        if "colour" in first_seed_images:  # the world: its colour x shape grids (one seed, synth2.world.heatmap)
            entry["colour_shape"] = {"seed": study.seeds[0]} | colour_shape_accuracy(first_seed_images, VARIANTS)
        pixel = comparisons_present(results, PIXEL_COMPARISONS)  # the pixel path's variant, when it ran
        if pixel:
            entry["pixel_speed"] = measured_speed(study, list(names.values()))
        variants = (*VARIANTS, *rounds, *(variant for _, variant, _ in pixel))
        differences = (*DIFFERENCES, *round_differences(rounds), *pixel)
        configurations.append(entry | aggregate(results, variants, differences))
        results_by_value[str(configuration.value)] = results
        variants_seen += [v for v in variants if v not in variants_seen]
    report = {
        "name": study.name,
        "seeds": study.seeds,
        "commit": study.commit,  # what the experiments ran, even if HEAD moved while they did
        "wall_seconds": wall_seconds,
        "sweep": asdict(study.sweep) if study.sweep else None,
        "configurations": configurations,
    }
    if study.sweep and study.sweep.key == HUMAN_PAIRS_KEY and len(study.sweep.values) >= 2:
        report["savings"] = data_efficiency(configurations, study.sweep.values)
    elif study.sweep and len(study.sweep.values) >= 2:  # the human pairs' sweep has its own answer (savings)
        report["sweep_differences"] = sweep_differences(results_by_value, variants_seen)
    return report


def measured_speed(study: Study, experiments: list[str]) -> dict[str, Any]:
    """The pixel path's timings of these experiments from MLflow (empty when tracking is off or failed:
    the study's other numbers do not wait for them)."""
    if not tracking.enabled():
        return {"experiments": []}
    try:
        return pixel_speed(study.root, experiments)
    except Exception as exc:  # tracking never fails the study
        log.warning("mlflow: the pixel path's timings were not read (%s: %s)", type(exc).__name__, exc)
        return {"experiments": []}


def report_study(study: Study, wall_seconds: float) -> dict[str, Any]:
    """Collect the finished experiments, write reports/study/NAME.* and log the study to MLflow."""
    report = collect(study, wall_seconds)
    outputs = write_reports(report, study.root)
    report["mlflow_run_id"] = log_to_mlflow(report, outputs, study.root)
    report["outputs"] = {k: str(v) for k, v in outputs.items()}
    return report


def run_study(study: Study) -> dict[str, Any]:
    """Run (or resume) the study's experiments, aggregate them, write and log the reports."""
    started = time.perf_counter()
    run_experiments(study)
    return report_study(study, time.perf_counter() - started)
