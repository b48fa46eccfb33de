"""Prefect tasks: each runs one DVC stage (or one DVC experiment) through DVC itself."""

from tasks.dvc_stages import StageFailed, StageOutcome, run_dvc_experiment, run_dvc_stage, stop_children

__all__ = ["StageFailed", "StageOutcome", "run_dvc_experiment", "run_dvc_stage", "stop_children"]
