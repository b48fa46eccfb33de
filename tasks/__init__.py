"""Prefect tasks: each runs one DVC stage, DVC experiment or DVC remote sync through DVC itself."""

from tasks.dvc_stages import (
    StageFailed,
    StageOutcome,
    run_dvc_experiment,
    run_dvc_stage,
    stop_children,
    sync_dvc_remote,
)

__all__ = ["StageFailed", "StageOutcome", "run_dvc_experiment", "run_dvc_stage", "stop_children", "sync_dvc_remote"]
