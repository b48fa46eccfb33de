"""Real local services for the tests: an MLflow tracking server and a Prefect server on 127.0.0.1.

Each runs in its own session (process group) and is stopped through that group's id, its own PID,
when the test session ends. `listening_addresses` lets tests check that nothing listens beyond
loopback; `assert_refuses_other_origins` that a Prefect server refuses a page from another origin.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flows.serve import server_environment

BIN = Path(sys.executable).parent
# A page that is not the server's own: the origin a malicious page in the user's browser would have.
OTHER_ORIGIN = "http://evil.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        # MLflow's server job runner (huey consumers, for GenAI judges and trace rollups): unused here.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        GX_ANALYTICS_ENABLED="false",
    )
    env.update(extra)
    return env


def listening_addresses(pid: int) -> set[str]:
    """Addresses the process and its descendants listen on."""
    pids = {pid}
    with contextlib.suppress(psutil.Error):
        pids |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
    return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}


@contextlib.contextmanager
def started(
    cmd: list[str], env: dict[str, str], log: Path, popen_kwargs: dict | None = None
) -> Iterator[subprocess.Popen]:
    """Start `cmd` in its own session; stop the session on exit. `popen_kwargs`: more arguments for
    Popen (e.g. the user to run as)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **(popen_kwargs or {})
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the session started above: the server and its workers
        try:
            proc.wait(timeout=3)  # test stores need no graceful drain; SIGKILL after a short grace
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_healthy(proc: subprocess.Popen, health_url: str, log: Path, timeout: float = 120) -> None:
    """Wait until `health_url` answers; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(health_url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{health_url} not healthy after {timeout} s:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)


@contextlib.contextmanager
def background(
    cmd: list[str], env: dict[str, str], health_url: str, log: Path, timeout: float = 120
) -> Iterator[subprocess.Popen]:
    """Start `cmd` in its own session, wait until `health_url` answers, stop the session on exit."""
    with started(cmd, env, log) as proc:
        wait_healthy(proc, health_url, log, timeout)
        yield proc


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and served artifacts; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    with background(cmd, service_env(), f"http://127.0.0.1:{port}/health", root / "server.log") as proc:
        url = f"http://127.0.0.1:{port}"
        assert listening_addresses(proc.pid) <= {"127.0.0.1"}, listening_addresses(proc.pid)
        yield url


def http_status(url: str, method: str, headers: dict[str, str], body: bytes = b"") -> int:
    """The status of one raw HTTP request: exactly these headers, none added (urllib adds a Content-Type)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.putrequest(method, path, skip_host=any(k.lower() == "host" for k in headers))
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


def assert_refuses_other_origins(api_url: str, auth_string: str | None = None) -> None:
    """A page from another origin can neither pass the Prefect API's CORS preflight nor change state
    with the request a browser sends without one: `fetch(url, {method: "POST", mode: "no-cors", body:
    blob})` carries no Content-Type, and Prefect reads such a body as JSON (an unprotected 3.9.1
    server answers 201 and creates the object). With `auth_string` the requests carry the password,
    so that the refusal shown is the CSRF check's own, not the password's."""
    auth = {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()} if auth_string else {}
    preflight = {
        "Origin": OTHER_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    assert http_status(f"{api_url}/work_pools/", "OPTIONS", preflight) == 400  # "Disallowed CORS origin"
    name = f"cross-origin-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"name": name, "type": "process"}).encode()
    assert http_status(f"{api_url}/work_pools/", "POST", {"Origin": OTHER_ORIGIN, **auth}, body) == 403
    assert http_status(f"{api_url}/work_pools/{name}", "GET", auth) == 404  # nothing was created


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1, SQLite under its own PREFECT_HOME, hardened as `make serve`
    hardens its server (CSRF on, no other origin), so every flow test runs through the CSRF checks;
    without its password, which tests/test_serve.py checks on `make serve` itself; yields the API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = service_env(PREFECT_HOME=str(home))
    env.update(server_environment(port, auth_string=None))
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background(cmd, env, f"http://127.0.0.1:{port}/api/health", home / "server.log") as proc:
        assert listening_addresses(proc.pid) <= {"127.0.0.1"}, listening_addresses(proc.pid)
        yield f"http://127.0.0.1:{port}/api"
