"""`synth2 tracking sync`: send the spool (synth2.tracking.spool) to MLflow, one queue per store.

Each store (tracking URI) is a queue of its own: its runs replay in the order they opened, each event
once: the spool keeps, per run, the MLflow run id and how many events were sent, so a sync cut short (a
crash, an outage) resumes where it stopped without logging anything twice, and a fully sent run's
directory is deleted. A run still open is left for a later sync, unless the process that opened it is
gone (`kill -9`): then it is closed as KILLED, with the time of its last event. One sync at a time per
project (a file lock); a background sync finding the lock held exits, since the holder will pick up its
runs.

A store that cannot take a run stops its own queue only: one run kept for a server that is down (or for
a one-off MLFLOW_TRACKING_URI that never comes back) must not keep every later run of the project's
`mlflow.db` in the spool. An unreachable server costs one short attempt: MLflow's HTTP client would
otherwise retry for minutes per call. The sync says, a line per store, what it sent and what waits and
why; a store that will never come back is given up on by hand, with the command the line names:
`--from OLD --to NEW` sends OLD's runs to NEW instead (from their first event), `--drop OLD` deletes
them. Exit status 0 when every store it reached took its runs (a store that is down is news, not an
error); 1 when a store answered and refused a run. Timeouts: SYNTH2_TRACKING_TIMEOUT seconds per request
(default 5).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth2.errors import Synth2Error, user_errors
from synth2.tracking import registry
from synth2.tracking.relink import artifact_root, relink_if_moved
from synth2.tracking.spool import (
    FILES,
    destination,
    note_unavailable,
    pending_runs,
    process_alive,
    read_events,
    read_state,
    retarget,
    spool_dir,
    write_state,
)
from synth2.tracking.store import absolute_uri, metric_key, project_root, resolve_tracking_uri
from synth2.tracking.variants import variant_tags

log = logging.getLogger("synth2.tracking")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # opens as a training experiment
TAG_EXECUTION_ID = "synth2.execution_id"
OUT_TAG = "dvc.out."
COMMAND = "synth2 tracking sync"


class TrackingUnavailable(Exception):
    """A store cannot take a run: stop its queue, keep its runs. `refused`: it answered and said no (a
    store that cannot be reached has not refused anything: waiting is all there is to do)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass
class Destination:
    """What one sync did for one store (tracking URI)."""

    uri: str
    sent: int = 0  # runs fully sent
    open: int = 0  # runs still being recorded (their process is alive)
    waiting: int = 0  # runs kept: the store could not take them
    dropped: int = 0  # deleted by --drop
    moved: int = 0  # re-targeted by --from/--to
    moved_to: str = ""
    error: str = ""  # why the runs wait
    refused: bool = False  # the store answered and refused them, rather than could not be reached
    instead: str = "URI"  # the store the message suggests for --to

    def line(self) -> str:
        parts = []
        if self.dropped:
            parts.append(f"{self.dropped} run(s) dropped")
        if self.moved:
            parts.append(f"{self.moved} run(s) moved to {self.moved_to}")
        if self.sent or not (parts or self.open or self.waiting):
            parts.append(f"{self.sent} run(s) sent")
        if self.open:
            parts.append(f"{self.open} still open")
        if self.waiting:
            uri = shlex.quote(self.uri)
            why = "refused" if self.refused else "unreachable"
            parts.append(
                f"{self.waiting} run(s) wait ({why}: {self.error}); if it will not come back, "
                f"`{COMMAND} --from {uri} --to {shlex.quote(self.instead)}` sends them to another store, "
                f"`{COMMAND} --drop {uri}` deletes them"
            )
        return f"{self.uri}: " + ", ".join(parts)


@dataclass
class SyncResult:
    destinations: dict[str, Destination] = field(default_factory=dict)  # by store, the oldest queue first
    busy: bool = False  # another sync holds the lock (it sends these runs too)
    run_ids: dict[str, str] = field(default_factory=dict)  # spool key -> MLflow run id
    experiment_ids: dict[str, str] = field(default_factory=dict)  # spool key -> MLflow experiment id

    def destination(self, uri: str) -> Destination:
        return self.destinations.setdefault(uri, Destination(uri))

    @property
    def sent(self) -> int:
        return sum(d.sent for d in self.destinations.values())

    @property
    def failed(self) -> bool:
        """Runs wait in the spool because a store could not take them."""
        return any(d.waiting for d in self.destinations.values())

    @property
    def refused(self) -> list[Destination]:
        """The stores that answered and refused runs: what a person has to look at."""
        return [d for d in self.destinations.values() if d.waiting and d.refused]

    def lines(self) -> list[str]:
        """One line per store."""
        if self.busy:
            return ["another sync is running; it sends these runs too"]
        return [d.line() for d in self.destinations.values()] or ["nothing to send: the spool is empty"]

    @property
    def message(self) -> str:
        return "; ".join(self.lines())


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

    def target(self, uri: str) -> str:
        """The store a run recorded for `uri` goes to in this sync."""
        return self.override_uri or uri

    def client(self, uri: str):
        uri = self.target(uri)
        if uri not in self.clients:
            from mlflow import MlflowClient

            self.clients[uri] = MlflowClient(uri)
            relink_if_moved(uri)  # a moved checkout's store: new artifacts go beside it, not to the old place
        return self.clients[uri]

    def experiment(self, uri: str, name: str, root: Path) -> str:
        uri = self.target(uri)
        if (uri, name) not in self.experiments:
            from mlflow.exceptions import MlflowException

            client = self.client(uri)
            found = client.get_experiment_by_name(name)
            if found is None:
                # A local store would put artifacts under ./mlruns of the current process: pin them
                # beside the database, where `synth2 tracking relink` finds them after a move.
                location = artifact_root(uri)
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
    root: Path | None = None,
    wait: bool = True,
    timeout: float | None = None,
    tracking_uri: str | None = None,
    move: tuple[str, str] | None = None,
    drop: Sequence[str] = (),
) -> SyncResult:
    """Send every closed run of the spool, each store's queue on its own; with `wait`, queue behind a
    running sync instead of leaving. `tracking_uri` sends every run to another store than the one it was
    recorded for, this time (e.g. after the server moved). Before sending, `move` = (old, new) sends old's
    runs to new from now on, and `drop` deletes the runs of those stores."""
    root = (root or project_root()).resolve()
    _configure_http(timeout or float(os.environ.get("SYNTH2_TRACKING_TIMEOUT", "5")))
    move = (absolute_uri(move[0], root), absolute_uri(move[1], root)) if move else None
    drop = [absolute_uri(uri, root) for uri in drop]
    result = SyncResult()
    with _lock(root, wait) as held:
        if not held:
            result.busy = True
            return result
        _give_up(root, result, move, drop, tracking_uri)
        session = Session(tracking_uri)
        for store, directories in _queues(root, session).items():
            _send_queue(store, directories, root, session, result)
        note_unavailable(root, {d.uri: d.error for d in result.destinations.values() if d.waiting})
    return result


def _give_up(
    root: Path, result: SyncResult, move: tuple[str, str] | None, drop: Sequence[str], tracking_uri: str | None
) -> None:
    """`--from OLD --to NEW` and `--drop OLD`: the runs of a store that will never come back go to another
    store, or away. A run still being recorded is not dropped: its process still writes to it."""
    if not (move or drop):
        return
    if move and tracking_uri:
        raise Synth2Error("--tracking-uri sends every run elsewhere this time; --from/--to moves one store's runs")
    if move and move[0] == move[1]:
        raise Synth2Error(f"--from and --to name the same store ({move[0]})")
    if move and move[0] in drop:
        raise Synth2Error(f"--from and --drop name the same store ({move[0]}): move its runs, or drop them")
    stores: dict[str, list[Path]] = {}
    for directory in pending_runs(root):
        stores.setdefault(destination(directory) or "", []).append(directory)
    stores.pop("", None)
    for uri in [*([move[0]] if move else []), *drop]:
        if uri not in stores:
            there = ", ".join(sorted(stores)) or "none"
            raise Synth2Error(f"no runs wait for {uri} in {spool_dir(root)} (the stores they wait for: {there})")
    if move:
        report = result.destination(move[0])
        report.moved_to = move[1]
        for directory in stores[move[0]]:
            retarget(directory, move[1])
            report.moved += 1
    for uri in drop:
        report = result.destination(uri)
        for directory in stores[uri]:
            if not _recording(read_events(directory)):
                shutil.rmtree(directory, ignore_errors=True)
                report.dropped += 1


def _recording(events: list[dict[str, Any]]) -> bool:
    """Whether the run's process is still recording it."""
    return bool(events) and events[-1]["event"] != "close" and process_alive(events[0].get("pid", -1))


def _queues(root: Path, session: Session) -> dict[str, list[Path]]:
    """The spool's runs by the store they go to, each queue oldest first, the oldest run's queue first."""
    queues: dict[str, list[Path]] = {}
    for directory in pending_runs(root):
        store = destination(directory)
        if store is None:
            shutil.rmtree(directory, ignore_errors=True)  # a run whose opening never reached the disk
            continue
        queues.setdefault(session.target(store), []).append(directory)
    return queues


def _send_queue(store: str, directories: list[Path], root: Path, session: Session, result: SyncResult) -> None:
    """Send one store's runs in order; the first the store cannot take stops this queue, and only it."""
    report = result.destination(store)
    for index, directory in enumerate(directories):
        try:
            outcome = _send(directory, root, session, result)
        except TrackingUnavailable as exc:
            report.waiting = sum(d.is_dir() for d in directories[index:])
            report.error, report.refused = str(exc), exc.refused
            report.instead = _instead(root, store)
            return
        report.sent += outcome == "sent"
        report.open += outcome == "open"


def _instead(root: Path, store: str) -> str:
    """The store to suggest for runs that wait: the one a stage would record to now, if it is another."""
    try:
        from synth2.params import load_params

        now = resolve_tracking_uri(load_params(root / "params.yaml").tracking.tracking_uri, root)
    except Exception:  # no params.yaml, or not a valid one: the user names the store
        return "URI"
    return now if now != store else "URI"


def _unavailable(exc: Exception) -> TrackingUnavailable:
    cause = _network_cause(exc)
    shown = cause or exc  # "ConnectionRefusedError: [Errno 111] Connection refused", not three wrappers of it
    detail = " ".join(str(shown).split())[:200]
    return TrackingUnavailable(f"{type(shown).__name__}: {detail}", refused=cause is None)


def _network_cause(exc: BaseException | None) -> OSError | None:
    """The innermost OSError behind the failure (a refused connection, a timeout, an unknown host;
    requests' errors are OSErrors too): the store could not be reached. None: it answered, and refused."""
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            found = exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return found


def _send(directory: Path, root: Path, session: Session, result: SyncResult) -> str:
    """Replay one run's events not sent yet; "sent", or "open" when its process is still running."""
    events = read_events(directory)
    if not events or events[0]["event"] != "open":
        shutil.rmtree(directory, ignore_errors=True)  # a run whose opening never reached the disk
        return "sent"
    opening = _opening(directory, events)
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


def _opening(directory: Path, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's opening event, naming the store it goes to now (it may have been re-targeted)."""
    return {**events[0], "tracking_uri": destination(directory, events)}


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
        write_state(directory, {**state, "run_id": run_id, "done": 1, "parent_id": parent_id})
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
            return _ensure_run(directory, _opening(directory, events), root, session, result) if events else None
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
        alias, evidence = event["alias"], event.get("evidence")  # none in runs spooled before it was recorded
        registry.promote_best(client, run_id, experiment_id, models, scores, metric, registered, alias, evidence)
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
        tags = {tag: entry["md5"] or "unknown"}
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run_id = client.create_run(experiment_id, start_time=stamp, tags=tags, run_name=f"vlm {variant}").info.run_id
        client.set_terminated(run_id, "FINISHED", end_time=stamp)
    metrics = [Metric(metric_key(k), float(v), stamp, 0) for k, v in entry["metrics"].items()]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in variant_tags(variant).items()])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `synth2 tracking sync` (and of `python -m synth2.tracking.sync`)."""
    parser.add_argument("--timeout", type=float, help="seconds per request to the tracking server (default 5)")
    parser.add_argument(
        "--tracking-uri", metavar="URI", help="send every run to this store, this time, instead of its own"
    )
    parser.add_argument("--from", dest="move_from", metavar="URI", help="with --to: the store whose runs move")
    parser.add_argument(
        "--to", dest="move_to", metavar="URI", help="send the runs of the store --from names here instead, for good"
    )
    parser.add_argument(
        "--drop", action="append", default=[], metavar="URI", help="delete the runs waiting for this store"
    )


def sync_command(args: argparse.Namespace, wait: bool = True) -> None:
    """Run a sync as the options ask and print a line per store; a store that refused runs is the
    error (after the other lines), one that could not be reached is not."""
    if bool(args.move_from) != bool(args.move_to):
        raise Synth2Error("--from and --to go together: `--from OLD --to NEW` sends the runs waiting for OLD to NEW")
    move = (args.move_from, args.move_to) if args.move_to else None
    result = sync(wait=wait, timeout=args.timeout, tracking_uri=args.tracking_uri, move=move, drop=args.drop)
    for report in result.destinations.values():
        if not (report.waiting and report.refused):
            print(report.line())
    if not result.destinations:
        print(result.message)  # another sync holds the lock, or the spool is empty
    if result.refused:
        raise Synth2Error("; ".join(d.line() for d in result.refused))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth2.tracking.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--background", action="store_true", help="leave when another sync holds the lock")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("synth2.tracking.champion").setLevel(logging.INFO)  # why the alias moved or stayed
    with user_errors(COMMAND):
        sync_command(args, wait=not args.background)
    return 0


if __name__ == "__main__":
    sys.exit(main())
