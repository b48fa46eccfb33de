"""Failures a user reads: one error policy for every entry point (stages, flows, the `synth2` command).

* A known failure (`Synth2Error`: bad params, a missing or corrupt input, a failed gate) is one line on
  stderr, `error: WHERE: message`, naming the file or key and the fix; exit status 1.
* Anything else is a bug or an environment problem: one line naming where it happened and the log file
  that holds the traceback (`.synth2/logs/`); exit status 1. `SYNTH2_DEBUG=1` shows the traceback
  instead, as Python would.
* Ctrl-C (and SIGTERM, which the entry points turn into the same) is `error: WHERE: interrupted`, exit 130.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

DEBUG_ENV = "SYNTH2_DEBUG"
LOGS = Path(".synth2") / "logs"


class Synth2Error(Exception):
    """A user-facing failure: bad params, a missing or corrupt input, a failed gate.

    The message is a single line that names the file or key and says how to fix it.
    """


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _log_traceback(where: str) -> Path | None:
    """Write the current exception's traceback to .synth2/logs/; the path, or None if it cannot."""
    root = Path(os.environ.get("DVC_ROOT") or os.getcwd())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in where)
    path = root / LOGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{safe}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError:
        return None
    return path


def one_line(message: str, limit: int = 400) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def user_errors(where: str) -> Iterator[None]:
    """Run the block under the error policy above: it ends the process on any failure."""
    try:
        yield
    except Synth2Error as exc:
        print(f"error: {where}: {one_line(exc, 2000)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {where}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if debug():
            raise
        log = _log_traceback(where)
        hint = f"traceback in {log}" if log else "rerun with SYNTH2_DEBUG=1 for the traceback"
        print(f"error: {where}: unexpected {type(exc).__name__}: {one_line(exc)} ({hint})", file=sys.stderr)
        sys.exit(1)


def terminate_as_interrupt() -> None:
    """Make SIGTERM end the process like Ctrl-C: cleanups run (children stopped, runs closed, Prefect's
    temporary server shut down) instead of the process vanishing mid-write."""
    import signal

    def interrupt(signum, frame):  # noqa: ARG001 - the signal handler's signature
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
