"""`synth2 tracking sync`: send the spool (synth2.tracking.spool) to MLflow, oldest run first.

Runs replay in the order they opened, each event once: the spool keeps, per run, the MLflow run id and how
many events were sent, so a sync cut short (a crash, an outage) resumes where it stopped without logging
anything twice, and a fully sent run's directory is deleted. A run still open is left for a later sync,
unless the process that opened it is gone (`kill -9`): then it is closed as KILLED, with the time of its
last event. One sync at a time per project (a file lock); a background sync finding the lock held exits,
since the holder will pick up its runs.

An unreachable server stops the sync after one short attempt: MLflow's HTTP client would otherwise retry
for minutes per call. The runs stay in the spool, a one-line message says so, and a later `synth2 tracking
sync` (or the next stage's) sends them. Timeouts: SYNTH2_TRACKING_TIMEOUT seconds per request (default 5).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth2.tracking import registry
from synth2.tracking.spool import (
    FILES,
    pending_runs,
    process_alive,
    read_events,
    read_state,
    spool_dir,
    write_state,
)
from synth2.tracking.store import metric_key, project_root

log = logging.getLogger("synth2.tracking")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # opens as a training experiment
TAG_EXECUTION_ID = "synth2.execution_id"
OUT_TAG = "dvc.out."
UNAVAILABLE = "unavailable"  # in the spool while the last sync could not reach the server: its message


class TrackingUnavailable(Exception):
    """The tracking server cannot be reached or refused a request: stop, keep the spool."""


@dataclass
class SyncResult:
    sent: int = 0  # runs fully sent
    waiting: int = 0  # runs still open (their process is alive)
    failed: bool = False
    message: str = ""
    run_ids: dict[str, str] = field(default_factory=dict)  # spool key -> MLflow run id
    experiment_ids: dict[str, str] = field(default_factory=dict)  # spool key -> MLflow experiment id


def _configure_http(timeout: float) -> None:
    """One short attempt per request unless the user chose otherwise: an outage must cost seconds."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextlib.contextmanager
def _lock(root: Path, wait: bool) -> Iterator[bool]:
    spool_dir(root).mkdir(parents=True, exist_ok=True)
    with open(spool_dir(root) / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Session:
    """MLflow clients per tracking URI, experiment ids, and runs created during this sync."""

    def __init__(self, override_uri: str | None = None) -> None:
        self.clients: dict[str, Any] = {}
        self.experiments: dict[tuple[str, str], str] = {}
        self.override_uri = override_uri

    def client(self, uri: str):
        uri = self.override_uri or uri
        if uri not in self.clients:
            from mlflow import MlflowClient

            self.clients[uri] = MlflowClient(uri)
        return self.clients[uri]

    def experiment(self, uri: str, name: str, root: Path) -> str:
        uri = self.override_uri or uri
        if (uri, name) not in self.experiments:
            from mlflow.exceptions import MlflowException

            client = self.client(uri)
            found = client.get_experiment_by_name(name)
            if found is None:
                # A local store would put artifacts under ./mlruns of the current process: pin them.
                location = (root / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
                try:
                    experiment_id = client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
                except MlflowException:  # created meanwhile by another process
                    experiment_id = client.get_experiment_by_name(name).experiment_id
            else:
                experiment_id = found.experiment_id
                if found.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
                    client.set_experiment_tag(experiment_id, *next(iter(EXPERIMENT_KIND.items())))
            self.experiments[(uri, name)] = experiment_id
        return self.experiments[(uri, name)]


def sync(
    root: Path | None = None, wait: bool = True, timeout: float | None = None, tracking_uri: str | None = None
) -> SyncResult:
    """Send every closed run of the spool; with `wait`, queue behind a running sync instead of leaving.
    `tracking_uri` sends them to another store than the one each run was recorded for (e.g. after the
    server moved)."""
    root = (root or project_root()).resolve()
    _configure_http(timeout or float(os.environ.get("SYNTH2_TRACKING_TIMEOUT", "5")))
    result = SyncResult()
    with _lock(root, wait) as held:
        if not held:
            result.message = "another sync is running; it sends these runs too"
            return result
        session = Session(tracking_uri)
        for directory in list(pending_runs(root)):
            try:
                outcome = _send(directory, root, session, result)
            except TrackingUnavailable as exc:
                left = len(list(pending_runs(root)))
                result.failed = True
                result.message = (
                    f"tracking server unavailable ({exc}); {left} run(s) kept in {spool_dir(root)}: "
                    "`synth2 tracking sync` sends them later"
                )
                (spool_dir(root) / UNAVAILABLE).write_text(result.message + "\n")
                return result
            result.sent += outcome == "sent"
            result.waiting += outcome == "open"
    for name in (UNAVAILABLE, UNAVAILABLE + ".told"):
        (spool_dir(root) / name).unlink(missing_ok=True)
    result.message = f"{result.sent} run(s) sent" + (f", {result.waiting} still open" if result.waiting else "")
    return result


def _unavailable(exc: Exception) -> TrackingUnavailable:
    detail = " ".join(str(exc).split())[:200]
    return TrackingUnavailable(f"{type(exc).__name__}: {detail}")


def _send(directory: Path, root: Path, session: Session, result: SyncResult) -> str:
    """Replay one run's events not sent yet; "sent", or "open" when its process is still running."""
    events = read_events(directory)
    if not events or events[0]["event"] != "open":
        shutil.rmtree(directory, ignore_errors=True)  # a run whose opening never reached the disk
        return "sent"
    opening = events[0]
    if events[-1]["event"] != "close":
        if process_alive(opening["pid"]):
            state = read_state(directory)
            if opening["kind"] == "pipeline" and "run_id" not in state:
                _ensure_run(directory, opening, root, session, result)  # children need their parent
            return "open"
        events = [*events, {"event": "close", "status": "KILLED", "time": events[-1]["time"]}]
    try:
        run_id = _ensure_run(directory, opening, root, session, result)
        state = read_state(directory)
        for index in range(state.get("done", 1), len(events)):
            _replay(events[index], run_id, opening, directory, root, session)
            state["done"] = index + 1
            write_state(directory, state)
    except TrackingUnavailable:
        raise
    except Exception as exc:  # the store refused it, or cannot be reached
        raise _unavailable(exc) from None
    shutil.rmtree(directory, ignore_errors=True)
    return "sent"


def _ensure_run(directory: Path, opening: dict, root: Path, session: Session, result: SyncResult) -> str:
    """The run's MLflow id, creating the run (and its parent) on first sight."""
    state = read_state(directory)
    uri, experiment = opening["tracking_uri"], opening["experiment"]
    if "run_id" in state:
        result.run_ids[directory.name] = state["run_id"]
        result.experiment_ids[directory.name] = session.experiment(uri, experiment, root)
        return state["run_id"]
    from mlflow.entities import Param

    try:
        client = session.client(uri)
        experiment_id = session.experiment(uri, experiment, root)
        tags = dict(opening["tags"])
        parent_id = _parent_id(opening.get("parent"), root, session, result, uri, experiment_id, opening)
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = client.create_run(experiment_id, start_time=opening["time"], tags=tags, run_name=opening["name"])
        run_id = run.info.run_id
        write_state(directory, {"run_id": run_id, "done": 1, "parent_id": parent_id})
        params = [Param(k, v) for k, v in opening["params"].items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        for path, digest in opening.get("datasets", []):
            registry.log_dataset(client, run_id, root / path, path, "input", digest)
    except TrackingUnavailable:
        raise
    except Exception as exc:
        raise _unavailable(exc) from None
    result.run_ids[directory.name] = run_id
    result.experiment_ids[directory.name] = experiment_id
    return run_id


def _parent_id(parent, root, session, result, uri, experiment_id, opening) -> str | None:
    if not parent:
        return None
    if "spool_key" in parent:
        directory = spool_dir(root) / parent["spool_key"]
        if directory.is_dir():
            events = read_events(directory)
            return _ensure_run(directory, events[0], root, session, result) if events else None
        return result.run_ids.get(parent["spool_key"])  # sent and deleted already in this sync
    client = session.client(uri)
    key = parent["execution_id"]
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_EXECUTION_ID}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    name = f"{parent['name']} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(opening['time'] / 1000))}"
    return client.create_run(experiment_id, start_time=opening["time"], tags=parent["tags"], run_name=name).info.run_id


def _replay(event: dict, run_id: str, opening: dict, directory: Path, root: Path, session: Session) -> None:
    from mlflow.entities import Metric, RunTag

    client = session.client(opening["tracking_uri"])
    kind, stamp = event["event"], event["time"]
    if kind == "metrics":
        metrics = [Metric(metric_key(k), float(v), stamp, 0) for k, v in event["values"].items()]
        if event.get("only_new"):  # DVC metrics files: what the stage did not log itself
            logged = set(client.get_run(run_id).data.metrics)
            metrics = [m for m in metrics if m.key not in logged]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
    elif kind == "curves":
        for key, points in event["curves"].items():
            metrics = [Metric(metric_key(key), float(v), stamp, int(s)) for s, v in points]
            for start in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[start : start + 1000])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in event["tags"].items()])
    elif kind == "artifact":
        path = directory / FILES / event["file"]
        if event.get("is_dir"):
            artifact_path = event["artifact_path"]
            client.log_artifacts(run_id, str(path), f"{artifact_path}/{path.name}" if artifact_path else path.name)
        else:
            client.log_artifact(run_id, str(path), event["artifact_path"])
    elif kind == "model":
        registry.log_model(client, run_id, directory / FILES / event["dir"], event["name"], event["md5"])
    elif kind == "promote":
        experiment_id = session.experiment(opening["tracking_uri"], opening["experiment"], root)
        models = {v: (directory / FILES / m["dir"], m["md5"]) for v, m in event["models"].items()}
        scores, metric, registered = event["scores"], event["metric"], event["registered_model"]
        registry.promote_best(client, run_id, experiment_id, models, scores, metric, registered, event["alias"])
    elif kind == "variants":
        experiment_id = session.experiment(opening["tracking_uri"], opening["experiment"], root)
        parent_id = read_state(directory).get("parent_id")
        for variant, entry in event["variants"].items():
            _variant_metrics(client, experiment_id, parent_id, variant, entry, stamp)
    elif kind == "close":
        client.set_terminated(run_id, event["status"], end_time=stamp)
        parent = opening.get("parent") or {}
        if "execution_id" in parent:  # a bare `dvc repro`'s parent has no owner: each stage closes it
            parent_id = read_state(directory).get("parent_id")
            if parent_id:
                info = client.get_run(parent_id).info
                failed = {"FAILED", "KILLED"} & {event["status"], info.status}
                final = "FAILED" if failed else "FINISHED"
                client.set_terminated(parent_id, final, end_time=stamp)


def _variant_metrics(client, experiment_id: str, parent_id: str | None, variant: str, entry: dict, stamp: int) -> None:
    """Log a variant's evaluation on the run that trained its model (found by the model's DVC md5); when
    no run trained it (DVC restored it from its cache), on a run of its own named after the variant."""
    from mlflow.entities import Metric, RunTag

    tag = f"{OUT_TAG}{entry['out']}"
    found = []
    if entry["md5"]:
        query = f"tags.`{tag}` = '{entry['md5']}'"
        found = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        tags = {"synth2.variant": variant, tag: entry["md5"] or "unknown"}
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run_id = client.create_run(experiment_id, start_time=stamp, tags=tags, run_name=f"vlm {variant}").info.run_id
        client.set_terminated(run_id, "FINISHED", end_time=stamp)
    metrics = [Metric(metric_key(k), float(v), stamp, 0) for k, v in entry["metrics"].items()]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag("synth2.variant", variant)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synth2 tracking sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--background", action="store_true", help="leave when another sync holds the lock")
    parser.add_argument("--timeout", type=float, help="seconds per request to the tracking server (default 5)")
    parser.add_argument("--tracking-uri", help="send to this store instead of the one each run was recorded for")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = sync(wait=not args.background, timeout=args.timeout, tracking_uri=args.tracking_uri)
    stream = sys.stderr if result.failed else sys.stdout
    print(("error: " if result.failed else "") + result.message, file=stream)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
