"""`make serve` and `make ui` themselves, on a workspace of their own (tests/checkout.py).

`make serve`: its Prefect server wants the password of .env (written once, mode 600) on every request
and refuses other origins, its worker runs a flow with the password, and a signal to make's process
group stops server and worker, however make was started: each such test reads make's process tree
once the worker is up, signals the process group as a terminal or a supervisor would, and then checks
by PID that every process of that tree is gone.

`make ui`: its MLflow server answers its own origin and host only: a page served by another local port,
or one that rebinds its own host name to 127.0.0.1, can neither write nor read.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dotenv import dotenv_values

from flows.serve import POOL, WORKER_LOCK, api_auth_string, server_environment
from tests.checkout import copy_checkout
from tests.services import assert_refuses_other_origins, free_port, http_status, service_env, started, wait_healthy

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
            # The password of the checkout's .env, not one of the caller's environment; the worker picks a
            # flow run up sooner.
            env={
                k: v for k, v in service_env(PREFECT_WORKER_QUERY_SECONDS="2").items() if k != "PREFECT_API_AUTH_STRING"
            },
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


def basic(auth_string: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def http_get(url: str, headers: dict[str, str]) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        return response.read()


def run_a_flow_through_the_worker(checkout: Path, api_url: str, auth_string: str) -> str:
    """Deploy a one-line flow of the checkout on the worker's pool, run it, return its final state."""
    from prefect import flow
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    (checkout / "hello_flow.py").write_text(
        "from prefect import flow\n\n\n@flow\ndef hello() -> str:\n    return 'hi'\n"
    )
    with temporary_settings({PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth_string}):
        source = flow.from_source(source=str(checkout), entrypoint="hello_flow.py:hello")
        deployment_id = source.deploy(name="auth-check", work_pool_name=POOL, print_next_steps=False)
        flow_run = run_deployment(deployment_id, timeout=STARTUP_TIMEOUT_S, poll_interval=1)
    return flow_run.state.type.value


def test_make_serve_wants_its_password_refuses_other_origins_runs_a_flow_and_stops_on_sigterm(
    checkout: Path, prefect_home: Path
):
    with make_serve(checkout, prefect_home) as (make, api_url, tree):
        env_file = checkout / ".env"  # written by `make serve`: the checkout had none
        assert env_file.stat().st_mode & 0o777 == 0o600
        auth_string = dotenv_values(env_file)["PREFECT_API_AUTH_STRING"]
        assert re.fullmatch(r"synth2:[\w-]{40,}", auth_string)

        pool = f"{api_url}/work_pools/{POOL}"
        new_pool = json.dumps({"name": "unauthenticated", "type": "process"}).encode()
        # A page that rebinds its host name to 127.0.0.1 is the server's origin to the browser: its
        # requests carry that name as Host (and Origin), and Prefect does not check the Host header.
        # Without the password it cannot read the CSRF token that every change needs (403 without one),
        # and even with a token (here fetched with the password) its change is refused.
        rebound = f"rebound.example:{api_url.split(':')[2].split('/')[0]}"
        page = {"Host": rebound, "Origin": f"http://{rebound}", "Content-Type": "application/json"}
        assert http_status(f"{api_url}/csrf-token?client=page", "GET", page) == 401
        assert http_status(f"{api_url}/work_pools/", "POST", page, new_pool) == 403
        token = json.loads(http_get(f"{api_url}/csrf-token?client=page", basic(auth_string)))["token"]
        csrf = {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": "page"}
        assert http_status(f"{api_url}/work_pools/", "POST", {**page, **csrf}, new_pool) == 401
        assert http_status(pool, "GET", {"Host": rebound}) == 401
        # Nor can anyone else without it (another user of the machine, a script), or with a wrong one.
        assert http_status(pool, "GET", {}) == 401
        assert http_status(pool, "GET", basic("synth2:wrong")) == 401
        assert http_status(f"{api_url}/work_pools/unauthenticated", "GET", basic(auth_string)) == 404
        assert http_status(pool, "GET", basic(auth_string)) == 200
        assert_refuses_other_origins(api_url, auth_string)  # with the password, still no other origin
        # The worker and the flow run it starts send the password: the run completes.
        assert run_a_flow_through_the_worker(checkout, api_url, auth_string) == "COMPLETED"
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


def test_make_serve_without_a_password_says_where_to_set_it_and_starts_nothing(tmp_path: Path, prefect_home: Path):
    checkout = copy_checkout(tmp_path / "checkout")
    (checkout / ".env").write_text("POSTGRES_USER=synth2\nPREFECT_API_AUTH_STRING=\n")  # e.g. copied from .env.example
    port = free_port()
    result = subprocess.run(
        ["make", "serve", f"PREFECT_PORT={port}", f"PREFECT_HOME={prefect_home}"],
        cwd=checkout,
        env={k: v for k, v in service_env().items() if k != "PREFECT_API_AUTH_STRING"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: no password for the Prefect server: set PREFECT_API_AUTH_STRING=user:password in "
        f"{checkout / '.env'} (.env.example says how to generate one) or in the environment"
    ]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # no server was started


def test_the_password_comes_from_the_environment_else_from_dotenv_and_reaches_the_server(tmp_path: Path):
    assert api_auth_string(tmp_path, {}) is None  # no .env
    (tmp_path / ".env").write_text("# secrets\nPREFECT_API_AUTH_STRING='synth2:from-file'\n")
    assert api_auth_string(tmp_path, {}) == "synth2:from-file"
    assert api_auth_string(tmp_path, {"PREFECT_API_AUTH_STRING": "synth2:from-env"}) == "synth2:from-env"
    assert "PREFECT_SERVER_API_AUTH_STRING" not in server_environment(4200, None)
    assert server_environment(4200, "synth2:secret") == {
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": "http://127.0.0.1:4200",
        "PREFECT_SERVER_API_AUTH_STRING": "synth2:secret",
    }


@contextlib.contextmanager
def make_ui(checkout: Path) -> Iterator[str]:
    """`make ui` on the checkout's own mlflow.db, as a user starts it; yields its URL."""
    port = free_port()
    env = {k: v for k, v in service_env().items() if k != "MLFLOW_TRACKING_URI"}
    log = checkout / f"ui-{port}.log"
    with started(["make", "ui", f"MLFLOW_PORT={port}"], env, log, popen_kwargs={"cwd": checkout}) as make:
        wait_healthy(make, f"http://127.0.0.1:{port}/health", log, timeout=STARTUP_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}"


def test_make_ui_answers_its_own_origin_and_host_only(checkout: Path):
    from mlflow import MlflowClient

    with make_ui(checkout) as url:
        api = f"{url}/api/2.0/mlflow/experiments"
        port = url.rsplit(":", 1)[1]

        def create(name: str, headers: dict[str, str]) -> int:
            body = json.dumps({"name": name}).encode()
            return http_status(f"{api}/create", "POST", {"Content-Type": "application/json", **headers}, body)

        # A page served by another local port (MLflow's own --cors-allowed-origins lets every localhost
        # origin through): no CORS preflight, no write, no cross-origin read.
        for other in (f"http://127.0.0.1:{free_port()}", f"http://localhost:{free_port()}"):
            preflight = {"Origin": other, "Access-Control-Request-Method": "POST"}
            assert (
                http_status(f"{api}/create", "OPTIONS", {**preflight, "Access-Control-Request-Headers": "content-type"})
                == 403
            )
            assert create("from-another-port", {"Origin": other}) == 403
            assert http_status(f"{api}/search?max_results=1", "GET", {"Origin": other}) == 403
        # A page that rebinds its host name to 127.0.0.1: its own origin to the browser, a foreign Host here.
        rebound = f"rebound.example:{port}"
        assert create("from-a-rebound-name", {"Host": rebound, "Origin": f"http://{rebound}"}) == 403
        assert http_status(f"{api}/search?max_results=1", "GET", {"Host": rebound}) == 403
        # The UI itself, under either name of its address, and clients that send no Origin (MlflowClient).
        assert http_status(f"{url}/", "GET", {}) == 200
        assert create("from-the-ui", {"Origin": url}) == 200
        assert (
            create("from-the-ui-as-localhost", {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})
            == 200
        )
        names = {e.name for e in MlflowClient(url).search_experiments()}
        # synth2: the experiment `make ui` lands on, created before it serves.
        assert names == {"Default", "synth2", "from-the-ui", "from-the-ui-as-localhost"}
    assert (checkout / "mlflow.db").exists()  # the project's own store, as `make ui` serves it
