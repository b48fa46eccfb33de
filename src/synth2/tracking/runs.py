"""One MLflow run per DVC stage, recorded by the stage itself, nested under one run per pipeline execution.

`synth2.stage.run_stage` wraps every stage body in `stage_run(name, params)`, which records the stage's
run into the spool (synth2.tracking.spool) before and after the body runs:

* tags: DVC stage name, git commit and dirty flag, the DVC md5 of every dep (`dvc.dep.<path>`) and out
  (`dvc.out.<path>`), the Prefect flow-run id and DVC experiment name when there are any;
* params: the `params.yaml` keys the stage declares in `dvc.yaml`, flattened with dots;
* datasets: every dep under `data/`, digest = the DVC md5;
* after the body: the stage's DVC metrics files as metrics, its DVC plots with an x of `step` as
  curves, and its metrics, plots and `reports/` outs as artifacts.

The stage then starts a background sync (synth2.tracking.sync) that sends closed runs to MLflow and exits
without waiting for it. Grouping: the Prefect flow opens the parent run (`start_pipeline_run`) and passes
its spool key in `SYNTH2_PARENT_SPOOL_KEY`. Under a bare `dvc repro` / `dvc exp run` the parent is keyed by
the DVC process that runs the stages (pid + start time, tag `synth2.execution_id`) and created on the
first sync of that invocation.

Inside a stage, `log_metrics`, `log_artifact`, `log_model` and `promote_best` record into the active run.
Outside one, or with `SYNTH2_TRACKING=0`, they are no-ops returning None; a tracking error is logged and
never fails a stage, unless `SYNTH2_TRACKING_STRICT=1` (the tests set it), which also syncs inline so that
errors of the sync surface in the stage.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from synth2.tracking.lineage import dvc_invocation, git_state, hashes, load_dvc_stage, pipeline_outs
from synth2.tracking.spool import SpoolRun, destination, first_telling, spool_dir, unavailable
from synth2.tracking.store import enabled, flatten, lookup, numeric_metrics, project_root, resolve_tracking_uri, strict
from synth2.tracking.variants import variant_of_stage, variant_tags

if TYPE_CHECKING:
    from synth2.params import Params

log = logging.getLogger("synth2.tracking")

ENV_PARENT_SPOOL_KEY = "SYNTH2_PARENT_SPOOL_KEY"
ENV_FLOW_RUN = "SYNTH2_PREFECT_FLOW_RUN_ID"

TAG_STAGE = "synth2.stage"
TAG_EXECUTION_ID = "synth2.execution_id"
TAG_EXECUTION = "synth2.execution"  # "prefect", "dvc repro", "dvc exp run", "standalone", "synth2 study"
TAG_COMMIT = "synth2.git.commit"
TAG_DIRTY = "synth2.git.dirty"
TAG_FLOW_RUN = "synth2.prefect.flow_run_id"
TAG_EXP_NAME = "synth2.dvc.exp_name"
DEP_TAG = "dvc.dep."
OUT_TAG = "dvc.out."
_ARTIFACT_LIMIT_BYTES = 20 * 2**20

T = TypeVar("T")
_active: contextvars.ContextVar[SpoolRun | None] = contextvars.ContextVar("synth2_stage_run", default=None)


def guarded(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Make a tracking call a no-op outside a stage run and never let it fail the stage."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        run = _active.get()
        if run is None:
            return None
        try:
            return fn(run, *args, **kwargs)
        except Exception as exc:
            if strict():
                raise
            log.warning("tracking: %s failed (%s: %s); the stage goes on", fn.__name__, type(exc).__name__, exc)
            return None

    return wrapper


def _destination(params: Params, root: Path) -> dict[str, str]:
    return {
        "tracking_uri": resolve_tracking_uri(params.tracking.tracking_uri, root),
        "experiment": params.tracking.experiment,
    }


@contextlib.contextmanager
def stage_run(name: str, params: Params) -> Iterator[str | None]:
    """Record one stage's run around its body; yields the spool key (None when tracking is off)."""
    if not enabled():
        yield None
        return
    root = project_root()
    try:
        run, stage = _open(name, params, root)
    except Exception as exc:
        if strict():
            raise
        log.warning("tracking: this stage is not recorded (%s: %s)", type(exc).__name__, exc)
        yield None
        return
    store = destination(run.directory)
    _say_once_if_unavailable(root, store)
    token = _active.set(run)
    status = "FAILED"
    try:
        yield run.key
        status = "FINISHED"
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into it (synth2.errors.terminate_as_interrupt)
        status = "KILLED"
        raise
    finally:
        _active.reset(token)
        try:
            _close(run, stage, status)
        except Exception as exc:
            if strict() and status == "FINISHED":
                raise
            log.warning("tracking: closing the run failed (%s: %s)", type(exc).__name__, exc)
        start_sync(root, store)


def _say_once_if_unavailable(root: Path, store: str | None) -> None:
    """When the last sync could not send to this run's store, say so once per pipeline execution (flow or
    `dvc repro`) and store, not in every stage: the runs are kept and sent later, nothing is lost. A store
    that is down is no news for a run that goes to another one."""
    why = unavailable(root).get(store or "")
    if why is None:
        return
    execution = os.environ.get(ENV_PARENT_SPOOL_KEY) or (dvc_invocation() or (str(os.getpid()),))[0]
    if first_telling(root, execution, store):
        log.warning(
            "tracking: this run waits in the spool: the last sync could not send to %s (%s); "
            "`synth2 tracking sync` sends it once it is back, or says how to send it elsewhere",
            store,
            why,
        )


def _open(name: str, params: Params, root: Path) -> tuple[SpoolRun, Any]:
    """Record the run's opening; (the spool run, the DVC stage or None outside DVC)."""
    from dvc.dependency.param import ParamsDependency

    _repo, stage, written = load_dvc_stage(name)
    stage_name = stage.addressing if stage is not None else name
    commit, dirty = git_state(Path.cwd(), written)
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or commit
    parent, execution = _parent(commit, dirty)
    tags = {TAG_STAGE: stage_name, TAG_EXECUTION: execution, **_commit_tags(commit, dirty)}
    variant = variant_of_stage(stage_name)
    if variant:  # a variant's training run: named and coloured as the variant from its start
        tags |= variant_tags(variant)
    if os.environ.get(ENV_FLOW_RUN):
        tags[TAG_FLOW_RUN] = os.environ[ENV_FLOW_RUN]
    if os.environ.get("DVC_EXP_NAME"):
        tags[TAG_EXP_NAME] = os.environ["DVC_EXP_NAME"]
    deps = [d for d in stage.deps if not isinstance(d, ParamsDependency)] if stage is not None else []
    dep_md5 = hashes(deps)
    tags |= {DEP_TAG + path: md5 for path, md5 in dep_md5.items()}
    datasets = [[path, md5] for path, md5 in dep_md5.items() if path.startswith("data/")]

    run = SpoolRun.create(root, stage_name)
    run.record(
        "open",
        kind="stage",
        name=stage_name,
        pid=os.getpid(),
        parent=parent,
        tags=tags,
        params={
            k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in _declared(stage, params).items()
        },
        datasets=datasets,
        **_destination(params, root),
    )
    return run, stage


def _parent(commit: str, dirty: bool) -> tuple[dict[str, Any] | None, str]:
    """(how the sync finds or creates the parent run, execution kind)."""
    if os.environ.get(ENV_PARENT_SPOOL_KEY):
        return {"spool_key": os.environ[ENV_PARENT_SPOOL_KEY]}, "prefect"
    invocation = dvc_invocation()
    if invocation is None:
        return None, "standalone"
    key, command = invocation
    tags = {TAG_EXECUTION_ID: key, TAG_EXECUTION: command, **_commit_tags(commit, dirty)}
    if os.environ.get("DVC_EXP_NAME"):
        tags[TAG_EXP_NAME] = os.environ["DVC_EXP_NAME"]
    return {"execution_id": key, "name": command, "tags": tags}, command


def _commit_tags(commit: str, dirty: bool) -> dict[str, str]:
    return {TAG_COMMIT: commit, "mlflow.source.git.commit": commit, TAG_DIRTY: str(dirty).lower()}


def _declared(stage: Any, params: Params) -> dict[str, Any]:
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


def _close(run: SpoolRun, stage: Any, status: str) -> None:
    """After the body: out hashes, DVC metrics and plots, and small report outs as artifacts."""
    if status == "FINISHED" and stage is not None:
        run.record("tags", tags={OUT_TAG + path: md5 for path, md5 in hashes(stage.outs).items()})
        for out in stage.outs:
            path = Path(out.def_path)
            if not path.exists():
                continue
            if out.metric and path.suffix == ".json":
                run.record("metrics", values=numeric_metrics(json.loads(path.read_text())), only_new=True)
                _keep_artifact(run, path, "dvc/metrics")
            elif out.plot:
                curves = _plot_curves(path, out.plot)
                if curves:
                    run.record("curves", curves=curves)
                _keep_artifact(run, path, "dvc/plots")
            elif out.def_path.startswith("reports/"):
                _keep_artifact(run, path, str(Path(out.def_path).parent))
    run.record("close", status=status)


def _plot_curves(path: Path, plot: Any) -> dict[str, list[list[float]]]:
    """A DVC plot CSV with x == step as per-step curves, one per y column."""
    import pandas as pd

    props = plot if isinstance(plot, dict) else {}
    if path.suffix != ".csv" or props.get("x", "step") != "step":
        return {}
    frame = pd.read_csv(path)
    if "step" not in frame:
        return {}
    ys = props.get("y")
    columns = [ys] if isinstance(ys, str) else list(ys or [c for c in frame.columns if c != "step"])
    return {
        c: [[int(s), float(v)] for s, v in zip(frame["step"], frame[c])]
        for c in columns
        if c in frame and pd.api.types.is_numeric_dtype(frame[c])
    }


def _keep_artifact(run: SpoolRun, path: Path, artifact_path: str | None) -> None:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if size > _ARTIFACT_LIMIT_BYTES:
        log.info("tracking: %s is %.0f MB; not copied as an artifact (DVC has it)", path, size / 2**20)
        return
    run.record("artifact", file=run.keep(path), artifact_path=artifact_path, is_dir=path.is_dir())


# ------------------------------------------------------------------------------ the stages' API


@guarded
def log_metrics(run: SpoolRun, values: Mapping[str, Any]) -> None:
    """Log numeric metrics, nested dicts flattened with dots; strings, bools and None are skipped."""
    run.record("metrics", values=numeric_metrics(values))


@guarded
def log_artifact(run: SpoolRun, path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file or directory (e.g. a contact sheet, a gate report) into the run's artifacts."""
    _keep_artifact(run, Path(path), artifact_path)


@guarded
def log_model(run: SpoolRun, directory: str | Path, name: str) -> None:
    """Log a saved model directory (save_pretrained / safetensors) as an MLflow model named `name`.

    It is logged as a pyfunc "model from code" carrying the directory (synth2.tracking.registry), tagged
    with the directory's DVC md5 so that a registered version ties back to the DVC out.
    """
    from synth2.io import current_path
    from synth2.tracking.lineage import dvc_md5

    directory = current_path(directory)  # written by this stage: still under its temporary name
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist")
    run.record("model", name=name, dir=run.keep(directory), md5=dvc_md5(directory))


@guarded
def promote_best(
    run: SpoolRun,
    variants: Mapping[str, str | Path],
    per_image: Mapping[str, Mapping[Any, float]],
    metric: str,
    registered_model: str,
    validation_set: str | Path,
) -> None:
    """Register every variant's model directory and move the alias `champion` to the best one, on evidence.

    evaluate calls it with each variant's per-image validation scores of `tracking.champion_metric`
    ({variant: {image id: score}}; the metric is their mean) and the validation table they were taken on.
    The best variant takes the alias only when its margin over the current champion, paired by image, has
    a 95% bootstrap interval above 0 (synth2.tracking.champion); the decision is made when the run reaches
    MLflow, and the run's tags say why. The models are looked up by their DVC md5 among the logged models
    (the train stages logged them); a copy travels along for a model no run logged (e.g. DVC restored it
    from its cache instead of training it).
    """
    import hashlib

    from synth2.io import current_path
    from synth2.tracking.lineage import dvc_md5

    directories = {v: current_path(d) for v, d in variants.items()}  # this stage's own are not renamed yet
    models = {v: {"dir": run.keep(d), "md5": dvc_md5(d)} for v, d in directories.items()}
    scores = {v: {str(i): float(x) for i, x in values.items()} for v, values in per_image.items()}
    evidence = {
        "metric": metric,
        # Scores pair across runs only on the same images: the md5 of the table that lists them.
        "validation_set": hashlib.md5(Path(validation_set).read_bytes()).hexdigest(),
        "scores": scores,
    }
    run.record(
        "promote",
        models=models,
        scores={v: sum(s.values()) / len(s) if s else float("nan") for v, s in scores.items()},
        metric=metric,
        registered_model=registered_model,
        alias="champion",
        evidence=evidence,
    )


@guarded
def log_variant_metrics(
    run: SpoolRun, models: Mapping[str, str | Path], metrics: Mapping[str, Mapping[str, Any]]
) -> None:
    """Put each model variant's evaluation on the run that trained it, under the same metric names for
    every variant, so that MLflow's compare view shows the variants side by side. A variant's run is found
    by the DVC md5 of its model directory (the `dvc.out.` tag of its training stage)."""
    from synth2.io import current_path
    from synth2.tracking.lineage import dvc_md5

    variants = {
        v: {"out": str(d), "md5": dvc_md5(current_path(d)), "metrics": numeric_metrics(metrics[v])}
        for v, d in models.items()
    }
    run.record("variants", variants=variants)


# ------------------------------------------------------------------------- pipeline-level runs (flows)


def start_pipeline_run(
    params: Params,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    run_params: Mapping[str, Any] | None = None,
    root: Path | None = None,
    parent_key: str | None = None,
) -> str:
    """Open the parent run of a flow execution in the spool; returns its key, which the stages find in
    SYNTH2_PARENT_SPOOL_KEY to nest under it. With `parent_key` the run nests under that spool run
    itself (`synth2 study`: a run per experiment under the study's)."""
    root = root or project_root()
    all_tags = {TAG_EXECUTION: "prefect", **_commit_tags(*git_state(root, pipeline_outs(root))), **(tags or {})}
    run = SpoolRun.create(root, run_name)
    params_flat = {k: str(v) for k, v in flatten(run_params or {}).items()}
    destination = _destination(params, root)
    run.record(
        "open",
        kind="pipeline",
        name=run_name,
        pid=os.getpid(),
        parent={"spool_key": parent_key} if parent_key else None,
        tags=all_tags,
        **destination,
        params=params_flat,
        datasets=[],
    )
    return run.key


def end_pipeline_run(
    key: str,
    status: str,
    metrics: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    root: Path | None = None,
    artifacts: Sequence[Path] = (),
    artifact_path: str | None = None,
) -> None:
    """Close a run opened by start_pipeline_run, logging `artifacts` (files or directories) under
    `artifact_path` first."""
    run = SpoolRun(spool_dir(root or project_root()) / key)
    if tags:
        run.record("tags", tags=dict(tags))
    if metrics:
        run.record("metrics", values=numeric_metrics(metrics))
    for path in artifacts:
        _keep_artifact(run, Path(path), artifact_path)
    run.record("close", status=status)


def start_sync(root: Path, store: str | None = None) -> None:
    """Send the spool to MLflow: in the background (the stage goes on), or inline in strict mode, where
    runs of the stage's own store that could not be sent fail it (another store's outage does not)."""
    if strict():
        from synth2.tracking.sync import sync

        result = sync(root)
        waiting = [d.line() for d in result.destinations.values() if d.waiting and store in (None, d.uri)]
        if waiting:
            raise RuntimeError(f"tracking sync failed: {'; '.join(waiting)}")
        return
    log_file = open(spool_dir(root) / "sync.log", "a")  # the child process writes to it
    subprocess.Popen(
        [sys.executable, "-m", "synth2.tracking.sync", "--background"],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C of the pipeline does not cut a sync short
    )


def run_url(run_id: str, experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """Where `make ui` shows the run."""
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"
