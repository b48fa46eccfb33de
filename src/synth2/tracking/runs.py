"""One MLflow run per DVC stage, written by the stage itself, nested under one run per pipeline execution.

`synth2.stage.run_stage` wraps every stage body in `stage_run(name, params)`, which opens the stage's
run and fills it with lineage before and after the body runs:

* tags: DVC stage name, git commit and dirty flag, the DVC md5 of every dep (`dvc.dep.<path>`) and out
  (`dvc.out.<path>`), the Prefect flow-run id and DVC experiment name when there are any;
* params: the `params.yaml` keys the stage declares in `dvc.yaml`, flattened with dots;
* datasets: every dep under `data/` through `mlflow.log_input`, digest = the DVC md5;
* after the body: the stage's DVC metrics files as metrics, its DVC plots with an x of `step` as
  curves, and its metrics, plots and `reports/` outs as artifacts.

Grouping: the Prefect flow creates the parent run (`start_pipeline_run`) and passes its id in
`SYNTH2_PARENT_RUN_ID`. Under a bare `dvc repro` / `dvc exp run` the first stage creates the parent,
keyed by the DVC process that runs the stages (pid + start time, tag `synth2.execution_id`); later
stages of the same invocation find it.

Inside a stage, `log_metrics`, `log_artifact` and the registry functions write to the active run. Outside
one, with `SYNTH2_TRACKING=0`, or after a tracking error they are no-ops returning None: tracking must
never fail a stage, unless `SYNTH2_TRACKING_STRICT=1` (the tests set it) turns its errors into exceptions.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from synth2.tracking.lineage import dvc_invocation, git_state, hashes, load_dvc_stage, pipeline_outs
from synth2.tracking.store import configure, enabled, flatten, lookup, metric_key, numeric_metrics, project_root, strict

if TYPE_CHECKING:  # mlflow and dvc cost seconds to import: only stage runs pay for them
    from mlflow import MlflowClient

    from synth2.params import Params

log = logging.getLogger("synth2.tracking")

ENV_PARENT_RUN = "SYNTH2_PARENT_RUN_ID"
ENV_FLOW_RUN = "SYNTH2_PREFECT_FLOW_RUN_ID"

TAG_STAGE = "synth2.stage"
TAG_EXECUTION_ID = "synth2.execution_id"
TAG_EXECUTION = "synth2.execution"  # "prefect", "dvc repro", "dvc exp run", "standalone"
TAG_COMMIT = "synth2.git.commit"
TAG_DIRTY = "synth2.git.dirty"
TAG_FLOW_RUN = "synth2.prefect.flow_run_id"
TAG_EXP_NAME = "synth2.dvc.exp_name"
DEP_TAG = "dvc.dep."
OUT_TAG = "dvc.out."
_ARTIFACT_LIMIT_BYTES = 20 * 2**20

T = TypeVar("T")


@dataclass
class StageRun:
    """The MLflow run of the stage running in this process, and what has been logged to it."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    stage: Any  # dvc.stage.Stage or None
    params: Params
    parent_id: str | None
    owns_parent: bool
    metric_keys: set[str] = field(default_factory=set)
    datasets: set[tuple[str, str, str]] = field(default_factory=set)


_active: contextvars.ContextVar[StageRun | None] = contextvars.ContextVar("synth2_stage_run", default=None)


def active_run() -> StageRun | None:
    return _active.get()


def guarded(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Make a tracking call a no-op outside a stage run and never let it fail the stage."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        if _active.get() is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if strict():
                raise
            log.warning("mlflow: %s failed (%s: %s); the stage goes on untracked", fn.__name__, type(exc).__name__, exc)
            return None

    return wrapper


@contextlib.contextmanager
def stage_run(name: str, params: Params) -> Iterator[str | None]:
    """One MLflow run around one stage body; yields its run id (None when tracking is off or broken)."""
    if not enabled():
        yield None
        return
    try:
        run = _open(name, params)
    except Exception as exc:
        if strict():
            raise
        log.warning("mlflow: tracking disabled for this stage (%s: %s)", type(exc).__name__, exc)
        yield None
        return
    token = _active.set(run)
    status = "FAILED"
    try:
        yield run.run_id
        status = "FINISHED"
    finally:
        _active.reset(token)
        try:
            _close(run, status)
        except Exception as exc:
            if strict() and status == "FINISHED":
                raise
            log.warning("mlflow: closing the run failed (%s: %s)", type(exc).__name__, exc)


def _open(name: str, params: Params) -> StageRun:
    import mlflow
    from dvc.dependency.param import ParamsDependency
    from mlflow import MlflowClient

    started = time.perf_counter()
    experiment_id = configure(params)
    client = MlflowClient()
    repo, stage = load_dvc_stage(name)
    stage_name = stage.addressing if stage is not None else name
    commit, dirty = git_state(Path.cwd(), pipeline_outs(Path.cwd()) if repo is not None else set())
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or commit

    parent_id, owns_parent, execution = _parent_run(client, experiment_id, commit, dirty)
    tags: dict[str, str] = {
        TAG_STAGE: stage_name,
        TAG_COMMIT: commit,
        "mlflow.source.git.commit": commit,
        TAG_DIRTY: str(dirty).lower(),
        TAG_EXECUTION: execution,
    }
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    if os.environ.get(ENV_FLOW_RUN):
        tags[TAG_FLOW_RUN] = os.environ[ENV_FLOW_RUN]
    if os.environ.get("DVC_EXP_NAME"):
        tags[TAG_EXP_NAME] = os.environ["DVC_EXP_NAME"]

    deps = [d for d in stage.deps if not isinstance(d, ParamsDependency)] if stage is not None else []
    dep_md5 = hashes(deps)
    tags.update({DEP_TAG + path: md5 for path, md5 in dep_md5.items()})

    run = client.create_run(experiment_id, run_name=stage_name, tags=tags)
    mlflow.start_run(run_id=run.info.run_id)  # the fluent API (and log_model) write to this run
    opened = StageRun(client, run.info.run_id, experiment_id, stage, params, parent_id, owns_parent)

    _log_params(opened, _declared_params(stage, params))
    for path, md5 in dep_md5.items():
        if path.startswith("data/"):
            _log_dataset(opened, path, path, "input", md5)
    log.info("mlflow: run %s (%s) opened in %.1f s", run.info.run_id, stage_name, time.perf_counter() - started)
    return opened


def _parent_run(client: MlflowClient, experiment_id: str, commit: str, dirty: bool) -> tuple[str | None, bool, str]:
    """(parent run id, whether this stage terminates it, execution kind)."""
    if os.environ.get(ENV_PARENT_RUN):
        return os.environ[ENV_PARENT_RUN], False, "prefect"
    invocation = dvc_invocation()
    if invocation is None:
        return None, False, "standalone"
    key, command = invocation
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_EXECUTION_ID}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id, True, command
    tags = {
        TAG_EXECUTION_ID: key,
        TAG_EXECUTION: command,
        TAG_COMMIT: commit,
        "mlflow.source.git.commit": commit,
        TAG_DIRTY: str(dirty).lower(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags[TAG_EXP_NAME] = os.environ["DVC_EXP_NAME"]
    name = f"{command} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id, True, command


def _declared_params(stage: Any, params: Params) -> dict[str, Any]:
    """The params.yaml keys the stage declares in dvc.yaml (all of them when run outside DVC)."""
    from dvc.dependency.param import ParamsDependency

    dumped = params.model_dump()
    if stage is None:
        return flatten(dumped)
    chosen: dict[str, Any] = {}
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            for key in dep.params or []:
                with contextlib.suppress(KeyError):
                    value = lookup(dumped, key)
                    chosen.update(flatten(value, key + ".") if isinstance(value, Mapping) else {key: value})
    return chosen


def _close(run: StageRun, status: str) -> None:
    import mlflow

    try:
        if status == "FINISHED" and run.stage is not None:
            _log_stage_outputs(run)
    finally:
        mlflow.end_run(status)
        if run.owns_parent and run.parent_id:
            # The parent of a bare `dvc repro` has no owner to close it: each stage closes it, so its
            # end time is the last stage's and it shows FAILED as soon as one stage failed.
            parent = run.client.get_run(run.parent_id).info
            final = "FAILED" if "FAILED" in (status, parent.status) else "FINISHED"
            run.client.set_terminated(run.parent_id, final)


def _log_stage_outputs(run: StageRun) -> None:
    """After the body: out hashes, DVC metrics and plots, and small report outs as artifacts."""
    from mlflow.entities import Metric

    stage = run.stage
    out_md5 = hashes(stage.outs)
    for path, md5 in out_md5.items():
        run.client.set_tag(run.run_id, OUT_TAG + path, md5)
    now = int(time.time() * 1000)
    batch: list[Metric] = []
    for out in stage.outs:
        path = Path(out.def_path)
        if not path.exists():
            continue
        if out.metric and path.suffix == ".json":
            values = numeric_metrics(json.loads(path.read_text()))
            batch += [Metric(k, v, now, 0) for k, v in values.items() if k not in run.metric_keys]
            run.metric_keys.update(values)
            _log_artifact(run, path, "dvc/metrics")
        elif out.plot:
            batch += _plot_curves(path, out.plot, now)
            _log_artifact(run, path, "dvc/plots")
        elif out.def_path.startswith("reports/"):
            _log_artifact(run, path, str(Path(out.def_path).parent))
    for start in range(0, len(batch), 1000):
        run.client.log_batch(run.run_id, metrics=batch[start : start + 1000])


def _plot_curves(path: Path, plot: Any, timestamp: int) -> list:
    """Turn a DVC plot CSV with x == step into per-step metrics (one curve per y column)."""
    import pandas as pd
    from mlflow.entities import Metric

    props = plot if isinstance(plot, dict) else {}
    if path.suffix != ".csv" or props.get("x", "step") != "step":
        return []
    frame = pd.read_csv(path)
    if "step" not in frame:
        return []
    ys = props.get("y")
    columns = [ys] if isinstance(ys, str) else list(ys or [c for c in frame.columns if c != "step"])
    metrics = []
    for column in columns:
        if column in frame and pd.api.types.is_numeric_dtype(frame[column]):
            key = metric_key(column)
            metrics += [Metric(key, float(v), timestamp, int(s)) for s, v in zip(frame["step"], frame[column])]
    return metrics


def _log_params(run: StageRun, values: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    batch = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in flatten(values).items()]
    for start in range(0, len(batch), 100):
        run.client.log_batch(run.run_id, params=batch[start : start + 100])


@guarded
def log_metrics(values: Mapping[str, Any]) -> None:
    """Log numeric metrics, nested dicts flattened with dots; strings, bools and None are skipped."""
    from mlflow.entities import Metric

    run = _active.get()
    flat = numeric_metrics(values)
    now = int(time.time() * 1000)
    run.client.log_batch(run.run_id, metrics=[Metric(k, v, now, 0) for k, v in flat.items()])
    run.metric_keys.update(flat)


def _log_artifact(run: StageRun, path: Path, artifact_path: str | None) -> None:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if size > _ARTIFACT_LIMIT_BYTES:
        log.info("mlflow: %s is %.0f MB; not copied as an artifact (DVC has it)", path, size / 2**20)
        return
    if path.is_dir():
        run.client.log_artifacts(run.run_id, str(path), f"{artifact_path}/{path.name}" if artifact_path else path.name)
    else:
        run.client.log_artifact(run.run_id, str(path), artifact_path)


@guarded
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file or directory (e.g. a contact sheet, a gate report) into the run's artifacts."""
    _log_artifact(_active.get(), Path(path), artifact_path)


def _log_dataset(run: StageRun, path: str, name: str, context: str, digest: str | None) -> None:
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    if digest is None or (name, digest, context) in run.datasets:
        return
    # MLflow registers the local source class twice; resolving a path by URI would warn about it.
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    dataset = MetaDataset(source=local(Path(path).resolve().as_uri()), name=name, digest=digest)
    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
    run.client.log_inputs(run.run_id, datasets=[entity])
    run.datasets.add((name, digest, context))


# ------------------------------------------------------------------------ pipeline-level runs (flows)


def start_pipeline_run(
    params: Params,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    run_params: Mapping[str, Any] | None = None,
    root: Path | None = None,
) -> tuple[str, str]:
    """Open the parent run of a flow execution; returns (run_id, experiment_id). Stage runs nest
    under it once its id is in SYNTH2_PARENT_RUN_ID."""
    from mlflow import MlflowClient

    root = root or project_root()
    experiment_id = configure(params, root)
    commit, dirty = git_state(root, pipeline_outs(root))
    all_tags = {
        TAG_EXECUTION: "prefect",
        TAG_COMMIT: commit,
        "mlflow.source.git.commit": commit,
        TAG_DIRTY: str(dirty).lower(),
        **(tags or {}),
    }
    client = MlflowClient()
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    if run_params:
        from mlflow.entities import Param

        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in flatten(run_params).items()])
    return run.info.run_id, experiment_id


def end_pipeline_run(
    run_id: str, status: str, metrics: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in numeric_metrics(metrics or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )
    client.set_terminated(run_id, status)


def run_url(run_id: str, experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """Where `make ui` shows the run."""
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"
