"""MLflow tracking recorded by the stages themselves, so a bare `dvc repro` records as much as the flow.

    store.py      where records go (MLFLOW_TRACKING_URI or params.tracking), the on/off switches
    lineage.py    git commit and dirty flag, the DVC stage running now, DVC md5s of deps and outs
    runs.py       one run per stage nested under one per pipeline execution, recorded into the spool
    spool.py      the local record of runs not yet sent (.synth2/spool/)
    sync.py       sends the spool to MLflow (`synth2 tracking sync`); stages start it in the background
    registry.py   models logged from their directories, registered, the champion aliased
    saved_model.py  the pyfunc "model from code" a logged model loads through

The public API is below; every recording call is a no-op outside a stage run and never fails a stage.
"""

from synth2.tracking.registry import TAG_MODEL_MD5
from synth2.tracking.runs import (
    ENV_FLOW_RUN,
    ENV_PARENT_SPOOL_KEY,
    TAG_COMMIT,
    TAG_EXECUTION,
    TAG_EXP_NAME,
    TAG_FLOW_RUN,
    TAG_STAGE,
    end_pipeline_run,
    log_artifact,
    log_metrics,
    log_model,
    log_variant_metrics,
    promote_best,
    run_url,
    stage_run,
    start_pipeline_run,
)
from synth2.tracking.store import enabled, flatten, lookup, numeric_metrics, project_root, resolve_tracking_uri


def send_spool(root=None, wait: bool = True, timeout: float | None = None, tracking_uri: str | None = None):
    """Send the spool to MLflow (synth2.tracking.sync.sync); imported on use, since stages run
    `python -m synth2.tracking.sync` and an eager import would load that module twice. Not named `sync`:
    importing the submodule binds `synth2.tracking.sync` to it, and a function of that name would be gone."""
    from synth2.tracking.sync import sync as send

    return send(root, wait, timeout, tracking_uri)


__all__ = [
    "ENV_FLOW_RUN",
    "ENV_PARENT_SPOOL_KEY",
    "TAG_COMMIT",
    "TAG_EXECUTION",
    "TAG_EXP_NAME",
    "TAG_FLOW_RUN",
    "TAG_MODEL_MD5",
    "TAG_STAGE",
    "end_pipeline_run",
    "enabled",
    "flatten",
    "log_artifact",
    "log_metrics",
    "log_model",
    "log_variant_metrics",
    "lookup",
    "numeric_metrics",
    "project_root",
    "promote_best",
    "resolve_tracking_uri",
    "run_url",
    "stage_run",
    "start_pipeline_run",
    "send_spool",
]
