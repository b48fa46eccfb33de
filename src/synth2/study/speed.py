"""The embedding/pixel speed of a study's experiments, read from MLflow.

pixel_synthesize times prior -> embedding against prior -> decoder -> pixels -> image encoder and records
the timings in its stage run (`speed.*`), never in a DVC output: timings differ from run to run, and an
output that changes marks what reads it stale. An experiment whose pixel_synthesize DVC restored from its
run-cache measured nothing, and has no such run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synth2 import tracking
from synth2.study.stats import summarise

log = logging.getLogger("synth2")
SPEED_KEYS = ("pixel_over_embedding_time", "embedding_captions_per_s", "pixel_captions_per_s")


def pixel_speed(root: Path, experiments: Iterable[str], variant: str = "synth_pixel") -> dict[str, Any]:
    """{experiments: those with a timing, each speed key: its summary over them, captions, decoder size}."""
    from mlflow import MlflowClient

    from synth2.params import load_params

    params = load_params(root / "params.yaml")
    tracking.send_spool(root)  # the experiments' stage runs may still wait in the spool
    client = MlflowClient(tracking.resolve_tracking_uri(params.tracking.tracking_uri, root))
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    wanted, found = set(experiments), {}
    if experiment is not None:
        stage = f"pixel_synthesize@{variant}"
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`{tracking.TAG_STAGE}` = '{stage}'",
            order_by=["attributes.start_time DESC"],
        )
        for run in runs:
            name = run.data.tags.get(tracking.TAG_EXP_NAME)
            if name in wanted and name not in found and f"speed.{SPEED_KEYS[0]}" in run.data.metrics:
                found[name] = run.data.metrics  # the latest run of each experiment
    speed: dict[str, Any] = {"experiments": sorted(found)}
    if found:
        runs = [found[name] for name in sorted(found)]
        speed |= {key: summarise([m[f"speed.{key}"] for m in runs]) for key in SPEED_KEYS}
        speed |= {key: int(runs[0][f"speed.{key}"]) for key in ("captions", "decoder_parameters", "decoder_steps")}
    return speed
