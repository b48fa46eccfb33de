"""Self-improvement rounds in a study: an experiment run with `-S 'self_improve.rounds={synth_r1: synth}'`
scores each round as evaluate scores its variants (metrics/self_improve/ROUND.json, per-image rows in
reports/self_improve/ROUND/per_image.parquet). Their rows join the experiment's own, so the statistics
treat a round like any variant: the paired differences `synth_r1 - synth`, `synth_r2 - synth_r1`, ...
(each round minus the VLM that captioned its pool) with both intervals; and per round, over seeds, the
pseudo-captions' kept share and accuracy and the caption diversity of the round's VLM on the pool."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from synth2 import dvc_runner, paths
from synth2.pipeline import ROUNDS_PARAM
from synth2.study.plan import StudyError
from synth2.study.stats import summarise

# What the study summarises of each round's report (metrics/self_improve/ROUND.json), by dotted key.
ROUND_FIGURES = (
    "pool.kept_share",
    "pool.pseudo_pairs",
    "pool.accuracy_captioned.attr_colour_shape",
    "pool.accuracy_kept.attr_colour_shape",
    "pool.accuracy_kept.attr_all",
    "diversity.previous.distinct_2",
    "diversity.this.distinct_2",
    "diversity.previous.concept_entropy",
    "diversity.this.concept_entropy",
    "diversity.dropped.previous.distinct_2",
    "diversity.dropped.this.distinct_2",
    "diversity.dropped.previous.concept_entropy",
    "diversity.dropped.this.concept_entropy",
    *(f"filter_on_validation.top_{p}" for p in (25, 50, 75, 100)),
)


def experiment_rounds(root: Path, name: str) -> dict[str, str]:
    """{round: the variant that captioned its pool} in experiment `name`'s params.yaml (empty: no rounds)."""
    document = yaml.safe_load(dvc_runner.read_file(root, "params.yaml", name)) or {}
    node: Any = document
    for part in ROUNDS_PARAM.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return dict(node or {})


def read_rounds(root: Path, name: str, rounds: Mapping[str, str]) -> tuple[dict, pd.DataFrame]:
    """({round: its report}, the rounds' per-image rows) of experiment `name`."""
    reports, rows = {}, []
    for variant in rounds:
        try:
            reports[variant] = json.loads(dvc_runner.read_file(root, paths.self_improve_metrics(variant), name))
            data = dvc_runner.read_file(root, paths.self_improve_report(variant) / "per_image.parquet", name, mode="rb")
        except Exception as exc:  # DVC raises several types for a missing revision or file
            raise StudyError(f"experiment {name}: cannot read round {variant} ({type(exc).__name__}: {exc})") from None
        rows.append(pd.read_parquet(io.BytesIO(data)))
    return reports, pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def with_rounds(metrics: dict, per_image: pd.DataFrame, reports: Mapping[str, dict], rows: pd.DataFrame):
    """The experiment's evaluation with each round scored beside its variants (metrics[split][round])."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in metrics.items()}
    for variant, report in reports.items():
        for split in ("val", "test"):
            merged[split][variant] = report[split]
    return merged, pd.concat([per_image, rows], ignore_index=True) if len(rows) else per_image


def round_differences(rounds: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(label, round, the variant that captioned its pool) for every round: `synth_r1 - synth`, ..."""
    return [(f"{variant} - {previous}", variant, previous) for variant, previous in rounds.items()]


def round_figures(reports_by_seed: Sequence[Mapping[str, dict]]) -> dict[str, dict[str, Any]]:
    """{round: {figure: its summary over seeds}} for ROUND_FIGURES (a figure missing in a seed is skipped)."""
    figures: dict[str, dict[str, Any]] = {}
    for variant in reports_by_seed[0] if reports_by_seed else {}:
        for key in ROUND_FIGURES:
            values = [_lookup(reports[variant], key) for reports in reports_by_seed]
            values = [v for v in values if v is not None]
            if values:
                figures.setdefault(variant, {})[key] = summarise(values)
    return figures


def _lookup(report: Mapping[str, Any], key: str) -> float | None:
    node: Any = report
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
