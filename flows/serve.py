"""`make serve`: a local Prefect server, the deployments of prefect.yaml, and a worker on their pool.

    python -m flows.serve --port 4200

The server wants a password on every request but the health check: PREFECT_API_AUTH_STRING
("user:password") from the environment or, as docker compose reads it, from the checkout's .env
(which `make serve` writes once with a random one, mode 600, as `make env` does); the worker and its
flow runs send it, and the UI asks for it. It also accepts cross-origin requests from no other origin
and wants a CSRF token on every state-changing request. The CSRF check alone stops a page of another
origin, not one that rebinds its own host name to 127.0.0.1: the browser then counts it as the
server's own origin (Prefect does not check the Host header), and it could read a CSRF token and
start a flow run that the worker would run as the user. Without the password it gets 401: the UI
keeps the password in its own origin's storage and the browser never offers it to another name.

Server and worker run in sessions of their own: a Ctrl-C, or a signal to make's process group,
reaches only this supervisor, which stops the worker first (SIGTERM, then SIGKILL after
WORKER_GRACE_S: Prefect 3.9's worker can hang in its own shutdown), then the server. It catches
SIGINT, SIGTERM and SIGHUP even when it inherited them ignored: a shell's background job starts
with SIGINT ignored, and a shell script cannot trap a signal ignored on entry, which is how the
shell recipe this replaces left both running. The children get SIGTERM if the supervisor dies
(PR_SET_PDEATHSIG), even by SIGKILL.

One worker per checkout: the supervisor holds an exclusive lock on WORKER_LOCK while it runs, and
so does the compose stack's worker, which mounts the checkout (docker-compose.yml). Two schedulers
firing the same deployments into one workspace would fight over DVC's lock and double the work.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "synth2-local"
WORKER_LOCK = ".synth2-worker.lock"
ENV_FILE = ".env"
WORKER_GRACE_S = 10
SERVER_GRACE_S = 10
STARTUP_TIMEOUT_S = 180
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signum)


def api_auth_string(root: Path, environ: Mapping[str, str]) -> str | None:
    """The server's "user:password": the environment's PREFECT_API_AUTH_STRING, else the one in
    `root`/.env (the environment wins, as with docker compose); None if neither has one."""
    if environ.get("PREFECT_API_AUTH_STRING"):
        return environ["PREFECT_API_AUTH_STRING"]
    env_file = root / ENV_FILE
    # python-dotenv: the parser Prefect itself reads .env with (compose's syntax: quotes, comments).
    return (dotenv_values(env_file).get("PREFECT_API_AUTH_STRING") or None) if env_file.exists() else None


def server_environment(port: int, auth_string: str | None) -> dict[str, str]:
    """What the server needs to accept only its own origin and, with `auth_string`, only that password."""
    env = {
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        # The UI is served from this origin and calls the API from it; no other origin may.
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
    }
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    return env


def take_worker_lock(root: Path) -> IO[str] | None:
    """The checkout's worker lock, held while the returned file stays open; None if another holds it."""
    handle = open(root / WORKER_LOCK, "a")  # held open for the process lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _die_with_parent(parent: int) -> None:
    """preexec_fn: SIGTERM this child when the supervisor dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    parent = os.getpid()
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, preexec_fn=lambda: _die_with_parent(parent))


def stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL what is left of it after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # The group outlives its leader when the leader's children (a worker's flow runs) linger.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_healthy(api_url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise SystemExit(f"error: the Prefect server exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"{api_url}/health", timeout=2)  # exempt from the auth string
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"error: the Prefect server at {api_url} is not healthy after {STARTUP_TIMEOUT_S} s"
                ) from None
            time.sleep(0.5)


def serve(port: int, auth_string: str, children: list[subprocess.Popen]) -> int:
    """Start server, deployments and worker; return when the worker exits (a signal raises Stop)."""
    api_url = f"http://127.0.0.1:{port}/api"
    # The worker hands its environment to the flow runs it starts: they send the password too.
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_API_AUTH_STRING": auth_string, "SYNTH2_ROOT": str(ROOT)}
    prefect = str(BIN / "prefect")
    server_cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    children.append(start(server_cmd, env | server_environment(port, auth_string)))
    wait_healthy(api_url, children[0])
    for args in (["work-pool", "create", POOL, "--type", "process", "--overwrite"], ["--no-prompt", "deploy", "--all"]):
        children.append(start([prefect, *args], env))
        if children[-1].wait() != 0:
            print(f"error: `prefect {' '.join(args)}` failed", file=sys.stderr)
            return 1
        children.pop()
    # --limit 1: one flow run at a time in this workspace; scheduled runs that come due meanwhile wait.
    children.append(start([prefect, "worker", "start", "--pool", POOL, "--limit", "1"], env))
    code = children[-1].wait()
    print(f"error: the Prefect worker exited with {code}", file=sys.stderr)
    return code or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4200, help="the server's port on 127.0.0.1")
    args = parser.parse_args(argv)
    auth_string = api_auth_string(ROOT, os.environ)
    if auth_string is None:
        print(
            f"error: no password for the Prefect server: set PREFECT_API_AUTH_STRING=user:password in "
            f"{ROOT / ENV_FILE} (.env.example says how to generate one) or in the environment",
            file=sys.stderr,
        )
        return 1
    for signum in STOP_SIGNALS:  # installed over SIG_IGN too: Python may, a shell may not
        signal.signal(signum, _raise_stop)
    lock = take_worker_lock(ROOT)
    if lock is None:
        print(
            f"error: another Prefect worker serves this checkout (it holds {ROOT / WORKER_LOCK}): stop it "
            "(`make serve` elsewhere, or `docker compose stop worker`) or serve another clone",
            file=sys.stderr,
        )
        return 1
    children: list[subprocess.Popen] = []
    received: int | None = None
    try:
        return serve(args.port, auth_string, children)
    except Stop as stop_signal:
        received = stop_signal.signum
        return 128 + received
    finally:
        for signum in STOP_SIGNALS:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        for child in reversed(children):  # the worker before the server it reports to
            stop(child, WORKER_GRACE_S if child is not children[0] else SERVER_GRACE_S)
        lock.close()
        if received is not None:  # die of the signal, so that make and the shell see an interrupt
            signal.signal(received, signal.SIG_DFL)
            os.kill(os.getpid(), received)


if __name__ == "__main__":
    sys.exit(main())
