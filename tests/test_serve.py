"""`make serve` itself, on a workspace of its own (tests/checkout.py): its Prefect server refuses other
origins, and a signal to make's process group stops server and worker, however make was started.

Each test reads make's process tree once the worker is up, signals the process group as a terminal
or a supervisor would, and then checks by PID that every process of that tree is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flows.serve import WORKER_LOCK, server_environment
from tests.checkout import copy_checkout
from tests.services import assert_refuses_other_origins, free_port, service_env

pytestmark = pytest.mark.slow
STARTUP_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60  # the supervisor gives the worker 10 s and the server 10 s before SIGKILL


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("serve") / "checkout")


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the module's servers, one after another: the database is migrated once."""
    return tmp_path_factory.mktemp("serve-prefect-home")


def is_worker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.cmdline()[2:4] == ["worker", "start"]
    return False


@contextlib.contextmanager
def make_serve(
    checkout: Path, prefect_home: Path, sigint_ignored: bool = False
) -> Iterator[tuple[subprocess.Popen, str, list[psutil.Process]]]:
    """`make serve` in a session of its own; yields make, the API URL and make's process tree once the
    worker runs. `sigint_ignored`: started the way a shell starts a background job (`make serve &`)."""
    port = free_port()
    log = checkout / f"serve-{port}.log"
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    with open(log, "w") as out:
        make = subprocess.Popen(
            ["make", "serve", f"PREFECT_PORT={port}", f"PREFECT_HOME={prefect_home}"],
            cwd=checkout,
            env=service_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not any(is_worker(p) for p in tree):
            if make.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"make serve: no worker (exit {make.returncode}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
            with contextlib.suppress(psutil.Error):
                tree = [psutil.Process(make.pid), *psutil.Process(make.pid).children(recursive=True)]
        yield make, f"http://127.0.0.1:{port}/api", tree
    finally:
        for process in tree:  # whatever a failed test left running, by PID (psutil checks it is the same process)
            with contextlib.suppress(psutil.Error):
                process.kill()
        make.wait()


def stop_and_check(make: subprocess.Popen, tree: list[psutil.Process], api_url: str, signum: int) -> None:
    assert {"server", "worker"} <= {p.cmdline()[2] for p in tree if len(p.cmdline()) > 2}
    os.killpg(make.pid, signum)  # what a terminal's Ctrl-C (SIGINT) or a supervisor (SIGTERM) does
    make.wait(timeout=STOP_TIMEOUT_S)
    _, alive = psutil.wait_procs(tree, timeout=STOP_TIMEOUT_S)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]
    port = int(api_url.split(":")[2].split("/")[0])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_make_serve_refuses_other_origins_and_stops_everything_on_sigterm(checkout: Path, prefect_home: Path):
    with make_serve(checkout, prefect_home) as (make, api_url, tree):
        assert_refuses_other_origins(api_url)
        assert (prefect_home / "prefect.db").exists()  # the server's state went where PREFECT_HOME says
        stop_and_check(make, tree, api_url, signal.SIGTERM)


def test_make_serve_stops_everything_on_ctrl_c_even_as_a_background_job(checkout: Path, prefect_home: Path):
    """SIGINT to the group, as a terminal's Ctrl-C sends it, to make started as a background job
    (`make serve &`), which inherits SIGINT ignored: a shell recipe cannot trap that, and the old
    recipe left server and worker running. (In a terminal SIGINT is not ignored; the supervisor's
    handler is the same.)"""
    with make_serve(checkout, prefect_home, sigint_ignored=True) as (make, api_url, tree):
        stop_and_check(make, tree, api_url, signal.SIGINT)


def test_make_serve_refuses_a_checkout_that_another_worker_serves(checkout: Path, prefect_home: Path):
    port = free_port()
    with open(checkout / WORKER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the compose worker's flock does
        result = subprocess.run(
            ["make", "serve", f"PREFECT_PORT={port}", f"PREFECT_HOME={prefect_home}"],
            cwd=checkout,
            env=service_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert "another Prefect worker serves this checkout" in result.stderr
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # no server was started


def test_the_auth_string_reaches_the_server_when_set():
    assert "PREFECT_SERVER_API_AUTH_STRING" not in server_environment(4200, {})
    hardened = server_environment(4200, {"PREFECT_API_AUTH_STRING": "synth2:secret"})
    assert hardened == {
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": "http://127.0.0.1:4200",
        "PREFECT_SERVER_API_AUTH_STRING": "synth2:secret",
    }
