"""MLflow tracking written by the stages themselves, so a bare `dvc repro` records as much as the flow.

`synth2.stage.run_stage` wraps every stage body in `stage_run(name, params)`, which opens one MLflow run
per DVC stage and fills it with lineage before and after the body runs:

* tags: DVC stage name, git commit and dirty flag, the DVC md5 of every dep (`dvc.dep.<path>`) and out
  (`dvc.out.<path>`), the Prefect flow-run id and DVC experiment name when there are any;
* params: the `params.yaml` keys the stage declares in `dvc.yaml`, flattened with dots;
* datasets: every dep under `data/` through `mlflow.log_input`, digest = the DVC md5;
* after the body: the stage's DVC metrics files as metrics, its DVC plots with an x of `step` as curves
  (unless the stage logged curves itself), and its metrics, plots and `reports/` outs as artifacts.

Grouping: each stage run is nested (tag `mlflow.parentRunId`) under one run per pipeline execution.
The Prefect flow creates that parent and passes its id in `SYNTH2_PARENT_RUN_ID`. Under a bare
`dvc repro` / `dvc exp run` the first stage creates the parent, keyed by the DVC process that runs the
stages (pid + start time, tag `synth2.execution_id`); later stages of the same invocation find it.

Stages call the module functions below (`log_params`, `log_metrics`, `log_curve`, `log_artifact`,
`log_dataset`, `log_model`, `register_model`, `set_champion`, `promote_best`). Outside a stage run,
with `SYNTH2_TRACKING=0`, or after a tracking error they are no-ops returning None: tracking must never
fail a stage, unless `SYNTH2_TRACKING_STRICT=1` (the tests set it) turns its errors into exceptions.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # mlflow and dvc cost seconds to import: only stage runs pay for them
    from mlflow import MlflowClient

    from synth2.params import Params

log = logging.getLogger("synth2.tracking")

ENV_PARENT_RUN = "SYNTH2_PARENT_RUN_ID"
ENV_FLOW_RUN = "SYNTH2_PREFECT_FLOW_RUN_ID"
ENV_ENABLED = "SYNTH2_TRACKING"
ENV_STRICT = "SYNTH2_TRACKING_STRICT"

TAG_STAGE = "synth2.stage"
TAG_EXECUTION_ID = "synth2.execution_id"
TAG_EXECUTION = "synth2.execution"  # "prefect", "dvc repro", "dvc exp run", "standalone"
TAG_COMMIT = "synth2.git.commit"
TAG_DIRTY = "synth2.git.dirty"
TAG_FLOW_RUN = "synth2.prefect.flow_run_id"
TAG_EXP_NAME = "synth2.dvc.exp_name"
TAG_MODEL_MD5 = "synth2.dvc_md5"  # on logged models: the DVC md5 of the directory they were logged from
DEP_TAG = "dvc.dep."
OUT_TAG = "dvc.out."

# Only tracked files that *code or params* live in make a run dirty; the pipeline itself rewrites
# dvc.lock and the git-tracked (cache: false) metrics and plots while it runs.
_PIPELINE_WRITTEN = ("dvc.lock",)
_ARTIFACT_LIMIT_BYTES = 20 * 2**20
_METRIC_KEY_BAD = re.compile(r"[^\w\-. /]")

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get(ENV_ENABLED, "1").strip().lower() not in {"0", "false", "off", "no"}


def _strict() -> bool:
    return os.environ.get(ENV_STRICT, "0").strip().lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------------- setup


def project_root() -> Path:
    """The DVC project the tracking store belongs to.

    DVC sets DVC_ROOT for stage commands, and for `dvc exp run --temp` points it at the parent
    project rather than the temporary copy, so experiments land in the project's store.
    """
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def resolve_tracking_uri(configured: str, root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI wins; a relative sqlite path in params is made absolute against the root."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    prefix = "sqlite:///"
    if configured.startswith(prefix) and not configured[len(prefix) :].startswith("/"):
        return prefix + str((root or project_root()) / configured[len(prefix) :])
    if "://" not in configured:  # a bare path: a local sqlite database
        path = Path(configured)
        return prefix + str(path if path.is_absolute() else (root or project_root()) / path)
    return configured


def configure(params: Params, root: Path | None = None) -> str:
    """Point the MLflow client at the project's store and experiment; return the experiment id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keeps stage logs readable
    import mlflow
    from mlflow.exceptions import MlflowException

    root = root or project_root()
    uri = resolve_tracking_uri(params.tracking.tracking_uri, root)
    mlflow.set_tracking_uri(uri)
    name = params.tracking.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        # A local store would put artifacts under ./mlruns of whichever process came first (for
        # `dvc exp run --temp`, a temporary copy): pin them to the project. A server decides itself.
        location = (root / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        try:
            experiment_id = mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another process
            experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars stay values."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def lookup(values: Mapping[str, Any], dotted: str) -> Any:
    """Read `a.b.c` out of nested mappings (e.g. the champion metric out of metrics/evaluate.json)."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Flatten and keep numbers only (bools and strings are not metrics); make keys MLflow-legal."""
    out: dict[str, float] = {}
    for key, value in flatten(values).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[_METRIC_KEY_BAD.sub("_", key)] = float(value)
    return out


def git_state(root: Path, ignore: set[str] = frozenset()) -> tuple[str, bool]:
    """(commit, dirty): dirty when a tracked file other than the pipeline's own outputs changed."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:].strip() for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    skip = set(_PIPELINE_WRITTEN) | set(ignore)
    dirty = any(path not in skip and not any(path.startswith(s.rstrip("/") + "/") for s in skip) for path in changed)
    return commit, dirty


def _dvc_invocation() -> tuple[str, str] | None:
    """(key, command) of the `dvc` process running this stage, or None when there is none.

    Stages of one `dvc repro` share that process, so its pid and start time identify the execution.
    """
    import psutil

    try:
        for proc in psutil.Process().parents():
            argv = proc.cmdline()
            names = [os.path.basename(a) for a in argv[:3]]
            if "dvc" not in names:
                continue
            verbs = [a for a in argv[names.index("dvc") + 1 :] if not a.startswith("-")]
            command = "dvc exp run" if verbs[:2] == ["exp", "run"] else "dvc " + (verbs[0] if verbs else "")
            return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}", command.strip()
    except psutil.Error:
        return None
    return None


# ----------------------------------------------------------------------------------- DVC lineage


def _load_dvc_stage(name: str):
    """The DVC stage running now (DVC_STAGE, set by DVC) or the one named `name`; None if neither."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc.stage.exceptions import StageNotFound

    try:
        repo = Repo(os.getcwd())
    except NotDvcRepoError:  # e.g. a stage test in a bare temporary workspace
        return None, None
    address = os.environ.get("DVC_STAGE") or name
    try:
        return repo, repo.stage.load_one(name=address.split(":")[-1])
    except (StageNotFound, DvcException):  # no dvc.yaml, or no stage of that name
        return repo, None


def dvc_md5(path: str | Path) -> str | None:
    """DVC's md5 of a file or directory (`<md5>.dir` for directories), via DVC's own hashing and its
    state cache, so DVC does not hash the same bytes again after the stage."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    path = Path(path)
    if not path.exists():
        return None
    repo = Repo(os.getcwd())
    odb = repo.cache.local  # its state db is the one DVC reads hashes back from
    _, _, obj = build(odb, str(path.resolve()), odb.fs, "md5", ignore=repo.dvcignore, dry_run=True)
    return obj.hash_info.value


def _pipeline_outs(root: Path) -> set[str]:
    """Every out declared in dvc.yaml: the pipeline rewrites them, so they do not make code dirty."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return {os.path.relpath(out.fs_path, root) for out in repo.index.outs}
    except DvcException:
        return set()


def _hashes(entries) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        try:
            info = entry.get_hash()
        except Exception:  # a missing out (e.g. the stage failed before writing it)
            continue
        if info and info.value:
            out[entry.def_path] = info.value
    return out


# ---------------------------------------------------------------------------------- the stage run


@dataclass
class _StageRun:
    client: MlflowClient
    run_id: str
    experiment_id: str
    stage: Any  # dvc.stage.Stage or None
    repo: Any
    params: Params
    parent_id: str | None
    owns_parent: bool
    metric_keys: set[str] = field(default_factory=set)
    curve_keys: set[str] = field(default_factory=set)
    datasets: set[tuple[str, str, str]] = field(default_factory=set)


_ACTIVE: _StageRun | None = None


def _guard(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Make a tracking call a no-op outside a stage run and never let it fail the stage."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        if _ACTIVE is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if _strict():
                raise
            log.warning("mlflow: %s failed (%s: %s); the stage goes on untracked", fn.__name__, type(exc).__name__, exc)
            return None

    return wrapper


@contextlib.contextmanager
def stage_run(name: str, params: Params) -> Iterator[str | None]:
    """One MLflow run around one stage body; yields its run id (None when tracking is off or broken)."""
    global _ACTIVE
    if not enabled():
        yield None
        return
    try:
        _ACTIVE = _open(name, params)
    except Exception as exc:
        if _strict():
            raise
        log.warning("mlflow: tracking disabled for this stage (%s: %s)", type(exc).__name__, exc)
        yield None
        return
    status = "FAILED"
    try:
        yield _ACTIVE.run_id
        status = "FINISHED"
    finally:
        active, _ACTIVE = _ACTIVE, None
        try:
            _close(active, status)
        except Exception as exc:
            if _strict() and status == "FINISHED":
                raise
            log.warning("mlflow: closing the run failed (%s: %s)", type(exc).__name__, exc)


def _open(name: str, params: Params) -> _StageRun:
    import mlflow
    from dvc.dependency.param import ParamsDependency
    from mlflow import MlflowClient

    started = time.perf_counter()
    experiment_id = configure(params)
    client = MlflowClient()
    repo, stage = _load_dvc_stage(name)
    stage_name = stage.addressing if stage is not None else name
    commit, dirty = git_state(Path.cwd(), _pipeline_outs(Path.cwd()) if repo is not None else set())
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
    dep_md5 = _hashes(deps)
    tags.update({DEP_TAG + path: md5 for path, md5 in dep_md5.items()})

    run = client.create_run(experiment_id, run_name=stage_name, tags=tags)
    mlflow.start_run(run_id=run.info.run_id)  # the fluent API (and log_model) write to this run
    active = _StageRun(client, run.info.run_id, experiment_id, stage, repo, params, parent_id, owns_parent)

    _log_params(active, _declared_params(stage, params))
    for path, md5 in dep_md5.items():
        if path.startswith("data/"):
            _log_dataset(active, path, path, "input", md5)
    log.info("mlflow: run %s (%s) opened in %.1f s", run.info.run_id, stage_name, time.perf_counter() - started)
    return active


def _parent_run(client: MlflowClient, experiment_id: str, commit: str, dirty: bool) -> tuple[str | None, bool, str]:
    """(parent run id, whether this stage terminates it, execution kind)."""
    if os.environ.get(ENV_PARENT_RUN):
        return os.environ[ENV_PARENT_RUN], False, "prefect"
    invocation = _dvc_invocation()
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


def _close(active: _StageRun, status: str) -> None:
    import mlflow

    try:
        if status == "FINISHED" and active.stage is not None:
            _log_stage_outputs(active)
    finally:
        mlflow.end_run(status)
        if active.owns_parent and active.parent_id:
            # The parent of a bare `dvc repro` has no owner to close it: each stage closes it, so its
            # end time is the last stage's and it shows FAILED as soon as one stage failed.
            parent = active.client.get_run(active.parent_id).info
            final = "FAILED" if "FAILED" in (status, parent.status) else "FINISHED"
            active.client.set_terminated(active.parent_id, final)


def _log_stage_outputs(active: _StageRun) -> None:
    """After the body: out hashes, DVC metrics and plots, and small report outs as artifacts."""
    from mlflow.entities import Metric

    stage = active.stage
    out_md5 = _hashes(stage.outs)
    for path, md5 in out_md5.items():
        active.client.set_tag(active.run_id, OUT_TAG + path, md5)
    now = int(time.time() * 1000)
    batch: list[Metric] = []
    for out in stage.outs:
        path = Path(out.def_path)
        if not path.exists():
            continue
        if out.metric and path.suffix == ".json":
            values = numeric_metrics(json.loads(path.read_text()))
            batch += [Metric(k, v, now, 0) for k, v in values.items() if k not in active.metric_keys]
            active.metric_keys.update(values)
            _log_artifact(active, path, "dvc/metrics")
        elif out.plot:
            if not active.curve_keys:
                batch += _plot_curves(path, out.plot, now)
            _log_artifact(active, path, "dvc/plots")
        elif out.def_path.startswith("reports/"):
            _log_artifact(active, path, str(Path(out.def_path).parent))
    for start in range(0, len(batch), 1000):
        active.client.log_batch(active.run_id, metrics=batch[start : start + 1000])


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
            key = _METRIC_KEY_BAD.sub("_", column)
            metrics += [Metric(key, float(v), timestamp, int(s)) for s, v in zip(frame["step"], frame[column])]
    return metrics


# ------------------------------------------------------------------------------ the public API


def _log_params(active: _StageRun, values: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    flat = {k: v for k, v in flatten(values).items()}
    batch = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in flat.items()]
    for start in range(0, len(batch), 100):
        active.client.log_batch(active.run_id, params=batch[start : start + 100])


@_guard
def log_params(values: Mapping[str, Any]) -> None:
    """Log params, nested dicts flattened with dots (`{"prior": {"lr": 1e-3}}` -> `prior.lr`)."""
    _log_params(_ACTIVE, values)


@_guard
def log_metrics(values: Mapping[str, Any], step: int | None = None) -> None:
    """Log numeric metrics, nested dicts flattened with dots; strings, bools and None are skipped."""
    from mlflow.entities import Metric

    flat = numeric_metrics(values)
    now = int(time.time() * 1000)
    _ACTIVE.client.log_batch(_ACTIVE.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in flat.items()])
    if step is None:
        _ACTIVE.metric_keys.update(flat)


@_guard
def log_curve(key: str, history: list[tuple[int, float]]) -> None:
    """Log a training curve as one metric by step, e.g. `log_curve("loss", [(0, 2.3), (50, 1.1)])`."""
    from mlflow.entities import Metric

    key = _METRIC_KEY_BAD.sub("_", key)
    now = int(time.time() * 1000)
    points = [Metric(key, float(v), now, int(s)) for s, v in history if v is not None and math.isfinite(float(v))]
    for start in range(0, len(points), 1000):
        _ACTIVE.client.log_batch(_ACTIVE.run_id, metrics=points[start : start + 1000])
    _ACTIVE.curve_keys.add(key)


def _log_artifact(active: _StageRun, path: Path, artifact_path: str | None) -> None:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if size > _ARTIFACT_LIMIT_BYTES:
        log.info("mlflow: %s is %.0f MB; not copied as an artifact (DVC has it)", path, size / 2**20)
        return
    if path.is_dir():
        active.client.log_artifacts(
            active.run_id, str(path), f"{artifact_path}/{path.name}" if artifact_path else path.name
        )
    else:
        active.client.log_artifact(active.run_id, str(path), artifact_path)


@_guard
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file or directory (e.g. a contact sheet, a gate report) into the run's artifacts."""
    _log_artifact(_ACTIVE, Path(path), artifact_path)


def _log_dataset(active: _StageRun, path: str, name: str, context: str, digest: str | None) -> None:
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    if digest is None or (name, digest, context) in active.datasets:
        return
    # MLflow registers the local source class twice; resolving a path by URI would warn about it.
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    dataset = MetaDataset(source=local(Path(path).resolve().as_uri()), name=name, digest=digest)
    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
    active.client.log_inputs(active.run_id, datasets=[entity])
    active.datasets.add((name, digest, context))


@_guard
def log_dataset(path: str | Path, name: str, context: str) -> None:
    """Record `path` as an input dataset of this run, its DVC md5 as the digest."""
    _log_dataset(_ACTIVE, str(path), name, context, dvc_md5(path))


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "transformers", "diffusers", "safetensors", "mlflow"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{package}=={version(package).split('+')[0]}")
    return pins


@_guard
def log_model(
    model: Any,
    name: str,
    registered_name: str | None = None,
    loader: str | None = None,
) -> str | None:
    """Log a model and return its URI (`models:/m-…`), registering it under `registered_name` if given.

    `model` is a `save_pretrained` directory, or an object with `save_pretrained` (transformers,
    diffusers), or any `torch.nn.Module` (its state dict is saved as safetensors). It is logged as a
    pyfunc "model from code" (src/synth2/tracking_model.py) carrying the directory as an artifact:
    no pickling, no torch.export, no input example needed. `loader` ("module:callable") is what
    `mlflow.pyfunc.load_model(uri).unwrap_python_model().load()` calls on the directory.
    """
    import warnings

    import mlflow

    with tempfile.TemporaryDirectory(prefix="synth2-model-") as tmp, warnings.catch_warnings():
        # The pyfunc wraps a directory; MLflow's advice to add predict() type hints does not apply.
        warnings.simplefilter("ignore", UserWarning)
        directory = _as_directory(model, Path(tmp) / name)
        md5 = dvc_md5(directory) if Path(directory).resolve().is_relative_to(Path.cwd()) else None
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("tracking_model.py")),
            artifacts={"model_dir": str(directory)},
            model_config={"loader": loader} if loader else None,
            pip_requirements=_pip_requirements(),
            tags={TAG_MODEL_MD5: md5} if md5 else None,
        )
    if registered_name:
        _register(info.model_uri, registered_name)
    return info.model_uri


def _as_directory(model: Any, target: Path) -> Path:
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} does not exist")
        return path
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(target)
        return target
    from safetensors.torch import save_file

    target.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(target / "model.safetensors"))
    (target / "module.txt").write_text(f"{type(model).__module__}.{type(model).__qualname__}\n")
    return target


def _resolve_model_uri(model: str | Path) -> str:
    """A model URI as is; a local directory -> the logged model with its DVC md5, logging it if none."""
    import mlflow

    if isinstance(model, str) and ":/" in model:
        return model
    md5 = dvc_md5(model)
    if md5 is None:
        raise FileNotFoundError(f"model directory {model} does not exist")
    found = mlflow.search_logged_models(
        experiment_ids=[_ACTIVE.experiment_id],
        filter_string=f"tags.`{TAG_MODEL_MD5}` = '{md5}'",
        max_results=100,
        output_format="list",
    )
    if found:
        # Same bytes may have been logged by earlier runs too: the lineage should point at this run's.
        own = [m for m in found if m.source_run_id == _ACTIVE.run_id]
        return (own or found)[0].model_uri
    # Logged by no earlier run (e.g. DVC restored the directory from its cache): log it now.
    return log_model(model, Path(model).name)


def _register(model_uri: str, registered_name: str, tags: Mapping[str, str] | None = None) -> str:
    """Register `model_uri`; the same model, or the same bytes (DVC md5), keeps its version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _ACTIVE.client
    with contextlib.suppress(MlflowException):
        client.create_registered_model(registered_name)
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    md5 = client.get_logged_model(model_id).tags.get(TAG_MODEL_MD5) if model_id else None
    for version in client.search_model_versions(f"name = '{registered_name}'"):
        same_model = version.source == model_uri or (model_id and getattr(version, "model_id", None) == model_id)
        if same_model or (md5 and version.tags.get(TAG_MODEL_MD5) == md5):
            break
    else:
        version = mlflow.register_model(model_uri, registered_name, tags={TAG_MODEL_MD5: md5} if md5 else None)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(registered_name, version.version, key, str(value))
    return str(version.version)


@_guard
def register_model(model: str | Path, registered_name: str, tags: Mapping[str, str] | None = None) -> str:
    """Register a model URI or a local model directory; return the registry version."""
    return _register(_resolve_model_uri(model), registered_name, tags)


@_guard
def set_champion(registered_name: str, model: str | Path, alias: str = "champion") -> str:
    """Register `model` (URI or directory) if needed and point `alias` at its version; return it."""
    version = _register(_resolve_model_uri(model), registered_name)
    _ACTIVE.client.set_registered_model_alias(registered_name, alias, version)
    return version


@_guard
def promote_best(
    variants: Mapping[str, str | Path],
    scores: Mapping[str, float],
    registered_name: str | None = None,
    alias: str = "champion",
    higher_is_better: bool = True,
) -> dict[str, str]:
    """Register every variant (model URI or directory) and alias the best-scoring one.

    evaluate calls `promote_best({v: paths.vlm_dir(v) for v in VLM_VARIANTS}, {v: score_v})` with the
    scores of `params.tracking.champion_metric`; returns {variant: version}.
    """
    name = registered_name or _ACTIVE.params.tracking.registered_model
    metric = _ACTIVE.params.tracking.champion_metric
    versions = {
        variant: _register(_resolve_model_uri(model), name, {"variant": variant, metric: scores.get(variant, "n/a")})
        for variant, model in variants.items()
    }
    ranked = [v for v in versions if v in scores and math.isfinite(scores[v])]
    if ranked:
        best = (max if higher_is_better else min)(ranked, key=lambda v: scores[v])
        _ACTIVE.client.set_registered_model_alias(name, alias, versions[best])
        _ACTIVE.client.set_tag(
            _ACTIVE.run_id, f"synth2.{alias}", f"{best} (v{versions[best]}, {metric}={scores[best]:.4g})"
        )
    return versions


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
    commit, dirty = git_state(root, _pipeline_outs(root))
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
