"""The tracking spool: what a run records, written to local files at once and sent to MLflow later.

A stage (or a flow) never talks to the tracking server itself: it appends events to its own run directory
under `.synth2/spool/` in the project, copies (hard-links where it can) the files to log, and starts a
background `synth2 tracking sync` that replays closed runs into MLflow. So a stage pays milliseconds for
tracking instead of seconds (no `import mlflow`, no store set-up, no round trips), an unreachable server
costs a stage nothing, and nothing is lost: what could not be sent stays in the spool until a later sync.

    .synth2/spool/<key>/events.jsonl   open, metrics, artifact, model, promote, ..., close
    .synth2/spool/<key>/files/         copies of the artifacts and model directories to log
    .synth2/spool/<key>/state.json     sync progress: the MLflow run id and how many events were sent,
                                       and the store it goes to when re-targeted
    .synth2/spool/unavailable.json     {store: why}: the stores the last sync could not send to

A key sorts by creation time, so runs replay in the order they opened (a model is logged by the stage
that trained it before `evaluate` registers it). The order matters within one store only: each store
(tracking URI) is its own queue, so a run recorded for a store that is down never holds back a run for
another one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPOOL = Path(".synth2") / "spool"
EVENTS, FILES, STATE = "events.jsonl", "files", "state.json"
UNAVAILABLE, TOLD = "unavailable.json", "unavailable.told"
_LEGACY_UNAVAILABLE = "unavailable"  # the one-store marker of earlier versions: a plain-text message


def spool_dir(root: Path) -> Path:
    return root / SPOOL


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SpoolRun:
    """One run's directory in the spool; `record` appends an event, `keep` copies a file or directory."""

    directory: Path

    @classmethod
    def create(cls, root: Path, label: str) -> SpoolRun:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        directory = spool_dir(root) / f"{time.time_ns():020d}-{os.getpid()}-{safe}"
        (directory / FILES).mkdir(parents=True)
        return cls(directory)

    @property
    def key(self) -> str:
        return self.directory.name

    def record(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": now_ms(), **fields}, sort_keys=True, default=str)
        with open(self.directory / EVENTS, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())  # a closed run must survive a crash of the machine, as DVC's outputs do

    def keep(self, path: Path) -> str:
        """Copy `path` (file or directory) into the run's files, hard-linked when possible; the relative
        name under files/. The workspace may change before the sync: the copy is what gets logged."""
        target = self.directory / FILES / f"{len(list((self.directory / FILES).iterdir())):03d}" / path.name
        target.parent.mkdir(parents=True)
        if path.is_dir():
            shutil.copytree(path, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(path), str(target))
        return str(target.relative_to(self.directory / FILES))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def read_events(directory: Path) -> list[dict[str, Any]]:
    """The run's events; a line cut short by a crash mid-write is ignored."""
    events = []
    path = directory / EVENTS
    if not path.exists():
        return events
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def pending_runs(root: Path) -> Iterator[Path]:
    """Run directories not yet fully sent, oldest first."""
    base = spool_dir(root)
    if base.is_dir():
        yield from sorted(p for p in base.iterdir() if p.is_dir() and (p / EVENTS).exists())


def destination(directory: Path, events: list[dict[str, Any]] | None = None) -> str | None:
    """The store (tracking URI) the run goes to: the one it was recorded for, unless it was re-targeted
    (`synth2 tracking sync --from OLD --to NEW`, kept in state.json); None for a run without an opening."""
    moved = read_state(directory).get("tracking_uri")
    if moved:
        return moved
    events = read_events(directory) if events is None else events
    return events[0].get("tracking_uri") if events and events[0]["event"] == "open" else None


def retarget(directory: Path, uri: str) -> None:
    """Send the run to `uri` from now on, from its first event: what an old store got of it stays there."""
    write_state(directory, {"tracking_uri": uri})


def unavailable(root: Path) -> dict[str, str]:
    """{store: why} for the stores the last sync could not send to."""
    path = spool_dir(root) / UNAVAILABLE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # none, or cut short by a crash: the next sync rewrites it
        return {}


def note_unavailable(root: Path, stores: Mapping[str, str]) -> None:
    """Record what the last sync could not reach; what was told about a store that is back is forgotten,
    so that it is told again should it go away again."""
    base = spool_dir(root)
    (base / _LEGACY_UNAVAILABLE).unlink(missing_ok=True)
    told = base / TOLD
    if not stores:
        (base / UNAVAILABLE).unlink(missing_ok=True)
        told.unlink(missing_ok=True)
        return
    tmp = base / (UNAVAILABLE + ".tmp")
    tmp.write_text(json.dumps(dict(stores), indent=1, sort_keys=True))
    os.replace(tmp, base / UNAVAILABLE)
    if told.exists():
        kept = [line for line in told.read_text().splitlines() if line.split("\t", 1)[-1] in stores]
        told.write_text("".join(line + "\n" for line in kept))


def first_telling(root: Path, execution: str, store: str) -> bool:
    """True once per (pipeline execution, store): whether to say now that the store's runs wait."""
    told = spool_dir(root) / TOLD
    line = f"{execution}\t{store}"
    if line in (told.read_text().splitlines() if told.exists() else []):
        return False
    with open(told, "a") as f:
        f.write(line + "\n")
    return True


def read_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(directory: Path, state: Mapping[str, Any]) -> None:
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, directory / STATE)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
