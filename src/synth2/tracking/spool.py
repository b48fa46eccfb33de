"""The tracking spool: what a run records, written to local files at once and sent to MLflow later.

A stage (or a flow) never talks to the tracking server itself: it appends events to its own run directory
under `.synth2/spool/` in the project, copies (hard-links where it can) the files to log, and starts a
background `synth2 tracking sync` that replays closed runs into MLflow. So a stage pays milliseconds for
tracking instead of seconds (no `import mlflow`, no store set-up, no round trips), an unreachable server
costs a stage nothing, and nothing is lost: what could not be sent stays in the spool until a later sync.

    .synth2/spool/<key>/events.jsonl   open, metrics, artifact, model, promote, ..., close
    .synth2/spool/<key>/files/         copies of the artifacts and model directories to log
    .synth2/spool/<key>/state.json     sync progress: the MLflow run id and how many events were sent

A key sorts by creation time, so runs replay in the order they opened (a model is logged by the stage
that trained it before `evaluate` registers it).
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
