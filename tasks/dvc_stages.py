"""Prefect tasks that run DVC stages and experiments through DVC.

DVC stays authoritative: it decides whether a stage is stale, runs its command, caches its outs and
writes dvc.lock. A task only asks DVC to reproduce one stage (`Repo.reproduce(stage, single_item=True)`
in a subprocess, see tasks/_repro.py), streams the output into the Prefect log, and reports whether DVC
ran or skipped the stage. Tasks of independent stages may run at once: DVC holds its repository lock
only around a stage's command, and _repro.py waits for it there. Each subprocess runs in its own
session, so `stop_children()` (the flow calls it when interrupted) can stop it with everything it
started. `sync_dvc_remote` pulls stages' outs from the DVC remote, or pushes them to it (`dvc pull` /
`dvc push`), so machines share what the pipeline produced. The interpreter, environment and command line
of every DVC call come from synth2.dvc_runner, which `synth2 study` runs DVC through too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task

from synth2 import dvc_runner
from synth2.errors import Synth2Error

# A stage that failed through synth2.errors.Synth2Error (bad params, missing input, failed gate)
# prints this prefix; such failures are deterministic and not worth a retry.
STAGE_ERROR_PREFIX = "error: stage '"
TAIL_LINES = 30
REPRO_SCRIPT = Path(__file__).with_name("_repro.py")


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    ran: bool  # False: DVC found the stage unchanged and skipped it
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageFailed(Synth2Error):
    """A DVC stage (or experiment) exited non-zero; `transient` says whether a retry may help. The message
    is the stage's own one-line error when it printed one, else the exit status and its last lines."""

    def __init__(self, stage: str, message: str, transient: bool) -> None:
        super().__init__(message)
        self.stage = stage
        self.transient = transient


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry crashes and lock contention, not a failed gate or bad params (they fail again), and nothing
    while the flow is stopping."""
    if _stopping.is_set():
        return False
    try:
        state.result()
    except StageFailed as exc:
        return exc.transient
    except Exception:
        return True
    return True


_children: set[subprocess.Popen] = set()
_stopping = threading.Event()  # set by stop_children(): no stage starts or retries after it


def stop_children(grace: float = 10.0) -> None:
    """SIGTERM every running stage subprocess and what it started (each is its own process group),
    SIGKILL what is left after `grace` seconds. The stages put back their outputs and close their runs."""
    _stopping.set()
    _stop([p for p in list(_children) if p.poll() is None], grace)


def _stop(processes: list[subprocess.Popen], grace: float = 10.0) -> None:
    for proc in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _stream(cmd: list[str], cwd: Path, env: dict[str, str], label: str) -> tuple[int, deque[str]]:
    """Run `cmd`, forwarding each output line to the Prefect log; return (exit code, last lines)."""
    logger = get_run_logger()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    if _stopping.is_set():
        raise StageFailed(label, f"{label}: not started, the flow is stopping", transient=False)
    with subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: stop_children() stops what it started too
    ) as proc:
        _children.add(proc)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                if line and not _is_progress_bar(line):
                    tail.append(line)
                    logger.info("%s | %s", label, line)
            return proc.wait(), tail
        except BaseException:  # interrupted where it runs (a task in the main thread): stop what it started
            _stop([proc])
            raise
        finally:
            _children.discard(proc)


def _is_progress_bar(line: str) -> bool:
    """tqdm redraws ("Batches:  36%|███▌ | 14/39 [...]") are noise in a log that keeps every line."""
    return "%|" in line and ("it/s]" in line or "s/it]" in line or "?it/s]" in line)


def _failure(stage: str, code: int, tail: deque[str]) -> StageFailed:
    errors = [line for line in tail if line.startswith(STAGE_ERROR_PREFIX)]
    if errors:  # "error: stage 'NAME': ..." -> "stage 'NAME': ..."
        return StageFailed(stage, errors[-1].removeprefix("error: "), transient=False)
    last = " / ".join(list(tail)[-5:])
    return StageFailed(stage, f"stage '{stage}' failed: exit status {code}; last output: {last}", transient=True)


@task(name="dvc-stage", task_run_name="{stage}", retry_condition_fn=_worth_retrying)
def run_dvc_stage(stage: str, root: str, force: bool = False, env: dict[str, str] | None = None) -> StageOutcome:
    """Reproduce one DVC stage; DVC skips it when deps, params and outs are unchanged."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="synth2-task-") as tmp:
        result_file = Path(tmp) / "result.json"
        # By path, not `-m`: the project being reproduced need not have this package on its path.
        cmd = [sys.executable, str(REPRO_SCRIPT), stage, str(result_file), *(["--force"] if force else [])]
        code, tail = _stream(cmd, Path(root), dvc_runner.environment(env), stage)
        if code != 0 or not result_file.exists():
            raise _failure(stage, code, tail)
        ran = bool(json.loads(result_file.read_text())["ran"])
    outcome = StageOutcome(stage, ran, round(time.perf_counter() - started, 2))
    get_run_logger().info("%s: %s in %.1f s", stage, "ran" if ran else "skipped (unchanged)", outcome.seconds)
    return outcome


@task(name="dvc-remote", task_run_name="dvc-{direction}", retry_condition_fn=_worth_retrying)
def sync_dvc_remote(
    direction: Literal["pull", "push"], stages: list[str], root: str, remote: str, env: dict[str, str] | None = None
) -> None:
    """`dvc pull` the outs of `stages` from the DVC remote (`remote`; '' : the default one), or `dvc push`
    them to it. A pull leaves out what the remote lacks (`--allow-missing`): the stages rebuild it."""
    cmd = dvc_runner.command(direction, *(["--remote", remote] if remote else []))
    cmd += [*(["--allow-missing"] if direction == "pull" else []), *stages]
    code, tail = _stream(cmd, Path(root), dvc_runner.environment(env), f"dvc {direction}")
    if code != 0:
        last = tail[-1] if tail else f"exit status {code}"
        raise StageFailed(
            f"dvc {direction}",
            f"{last}; set up the DVC remote (README: Scaling out) or set orchestration.{direction}: false",
            transient=True,
        )
    get_run_logger().info("dvc %s: the outs of %d stage(s) in sync with the DVC remote", direction, len(stages))


@task(name="dvc-experiment", task_run_name="exp-{name}", retry_condition_fn=_worth_retrying)
def run_dvc_experiment(name: str, overrides: dict[str, Any], root: str, env: dict[str, str] | None = None) -> str:
    """`dvc exp run --temp -S key=value …`: the variant runs in a temporary copy of the workspace, so
    params.yaml, dvc.lock and the outputs in the workspace stay as committed; the result is kept as a
    DVC experiment (`dvc exp show`, `dvc exp apply NAME`)."""
    cmd = dvc_runner.command("exp", "run", "--temp", "--name", name, *dvc_runner.set_args(overrides))
    code, tail = _stream(cmd, Path(root), dvc_runner.environment(env), f"exp {name}")
    if code != 0:
        raise _failure(f"exp {name}", code, tail)
    return name
