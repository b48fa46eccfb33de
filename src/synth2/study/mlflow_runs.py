"""A study in MLflow: one parent run for the study (its mean differences, its reports as artifacts) and
a child run per experiment (its seed's metrics), recorded through synth2.tracking's spool like every
other run, so a tracking server that is down loses nothing: `synth2 tracking sync` sends them later."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synth2 import tracking

log = logging.getLogger("synth2")

EXECUTION = "synth2 study"
TAG_STUDY = "synth2.study"
TAG_SEED = "synth2.seed"


def log_to_mlflow(report: Mapping[str, Any], outputs: Mapping[str, Path], root: Path) -> str | None:
    """Record and send the study's runs; the parent's MLflow run id, None when tracking is off or the
    runs could not be sent yet (they wait in the spool)."""
    if not tracking.enabled():
        return None
    try:
        from synth2.params import load_params

        params = load_params(root / "params.yaml")
        tags = {tracking.TAG_EXECUTION: EXECUTION, tracking.TAG_COMMIT: report["commit"], TAG_STUDY: report["name"]}
        parent = tracking.start_pipeline_run(
            params, f"study {report['name']}", tags, {"seeds": json.dumps(report["seeds"])}, root
        )
        means: dict[str, float] = {}
        for configuration in report["configurations"]:
            for index, (seed, name) in enumerate(sorted(configuration["experiments"].items())):
                child_tags = tags | {tracking.TAG_EXP_NAME: name, TAG_SEED: str(seed)}
                run_params = {"seed": seed, **configuration["overrides"]}
                child = tracking.start_pipeline_run(params, name, child_tags, run_params, root, parent_key=parent)
                tracking.end_pipeline_run(child, "FINISHED", seed_values(configuration["summary"], index), root=root)
            means |= {
                f"{configuration['label']}.{label}.test.{subset}.{metric}": entry["mean"]
                for label, splits in configuration["differences"].items()
                for subset, entries in splits["test"].items()
                for metric, entry in entries.items()
            }
        means |= {  # a sweep of the human pairs: the savings factors (None: never matched, not logged)
            f"savings.{metric}.factor": entry["factor"]
            for metric, entry in (report.get("savings") or {}).items()
            if entry["factor"] is not None
        }
        tracking.end_pipeline_run(
            parent, "FINISHED", means, root=root, artifacts=list(outputs.values()), artifact_path="study"
        )
        sent = tracking.send_spool(root)
        store = sent.destinations.get(tracking.resolve_tracking_uri(params.tracking.tracking_uri, root))
    except Exception as exc:  # tracking never fails the study: the reports are written already
        log.warning("mlflow: the study was not logged (%s: %s)", type(exc).__name__, exc)
        return None
    if store is not None and store.waiting:  # another store's outage is no news for the study
        log.warning("mlflow: the study's runs wait in the spool (%s)", store.line())
    return sent.run_ids.get(parent)


def seed_values(summary: Mapping[str, Any], index: int) -> dict[str, float]:
    """The metrics of the index-th seed (seeds sorted) out of a configuration's summary."""
    return {
        f"{split}.{variant}.{subset}.{metric}": entry["values"][index]
        for split, variants in summary.items()
        for variant, subsets in variants.items()
        for subset, entries in subsets.items()
        for metric, entry in entries.items()
    }
