"""docker-compose.yml: its shape, its .env, and its services run natively (no Docker engine here).

The native stack (tests/compose_native.py) takes every command, environment, user and healthcheck from
the compose file itself, interpolated from a test .env whose database password and Prefect auth
string hold the characters that break URLs (`@ : / # %`): a Postgres cluster with that password,
MLflow and the Prefect server on it, and the worker, run as the UID:GID of `user:` (a user with no
passwd entry, as in the container) on a workspace of its own, a tiny DVC project
(tests/dvc_project.py). Then the host user, the same UID, runs `make run` on that workspace.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from tests.checkout import chown_tree, copy_checkout, portable_environment, reachable_by_all, run_as, unused_ids
from tests.compose_native import (
    COMPOSE_FILE,
    MissingVariable,
    healthcheck_command,
    image_environment,
    load_compose,
    localized,
    native_command,
    native_environment,
    published_port,
    read_env_file,
    user_ids,
)
from tests.dvc_project import make_project
from tests.postgres import postgres_cluster
from tests.services import (
    BIN,
    OTHER_ORIGIN,
    assert_refuses_other_origins,
    free_port,
    http_status,
    listening_addresses,
    service_env,
    started,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SYNTH2_SERVICES = ("mlflow", "worker")  # built from docker/Dockerfile, run as the host user
PG_USER = "synth2"
# Every character that breaks a database URL pasted together by hand.
PG_PASSWORD = "p@ss:w/rd#1%2F"
AUTH_STRING = "synth2:auth@:/#%x"
DEPLOYMENT = "synth2-pipeline/nightly-synthetic-refresh"
FLOW_RUN_TIMEOUT_S = 300


# --- The file itself ------------------------------------------------------------------------------


def test_compose_has_the_stack_with_meaningful_healthchecks_loopback_ports_and_a_serial_worker():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "mlflow", "prefect-server", "worker", "ray-head", "ray-worker"}
    assert all("healthcheck" in s for s in services.values())
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    postgres_check = services["postgres"]["healthcheck"]["test"][1]
    assert postgres_check.count("-h 127.0.0.1") == 2  # over TCP
    assert "-d mlflow" in postgres_check and "-d prefect" in postgres_check
    assert "/api/ready" in services["prefect-server"]["healthcheck"]["test"][-1]  # answers 200 only with a database
    worker = " ".join(services["worker"]["command"])
    assert "deploy --all" in worker and "worker start --pool synth2-local --limit 1" in worker
    assert services["worker"]["depends_on"] == {
        "prefect-server": {"condition": "service_healthy"},
        "mlflow": {"condition": "service_healthy"},
    }
    for name in SYNTH2_SERVICES:
        assert services[name]["user"].startswith("${HOST_UID:?"), name
    assert services["worker"]["volumes"] == [".:/app"]  # and nothing else of the host: PREFECT_HOME is the image's


def test_compose_ray_cluster_runs_the_pinned_ray_with_token_auth():
    """The Ray services run the project image, whose Ray is pyproject.toml's pin, with a token from .env."""
    services = COMPOSE["services"]
    pinned = re.search(r'"ray==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned and pinned.group(1) == importlib.metadata.version("ray"), "pyproject.toml pins the Ray installed"
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["image"] == worker["image"] == services["worker"]["image"]  # the synth2 image: the pinned Ray
    assert head["command"][:4] == ["ray", "start", "--head", "--block"] and "--port=6379" in head["command"]
    assert worker["command"][:3] == ["ray", "start", "--address=ray-head:6379"] and "--block" in worker["command"]
    for service in (head, worker):
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN")
    assert worker["depends_on"] == {"ray-head": {"condition": "service_healthy"}}


def test_compose_takes_secrets_from_the_env_file_and_puts_them_in_no_url_or_command():
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used <= set(read_env_file(ENV_EXAMPLE)), used - set(read_env_file(ENV_EXAMPLE))
    for name, service in COMPOSE["services"].items():
        command = " ".join(service.get("command") or [])
        assert "PASSWORD" not in command and "AUTH_STRING" not in command, name
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "AUTH_STRING" in key:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}.{key} must be a required variable"
            assert not re.search(r"://[^/\s]*\$\{POSTGRES_PASSWORD", str(value)), f"{name}.{key} pastes it into a URL"
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == ".env"


def test_the_example_env_has_no_working_secret_so_compose_stops_with_a_clear_message():
    example = read_env_file(ENV_EXAMPLE)
    assert example["POSTGRES_PASSWORD"] == "" and example["PREFECT_API_AUTH_STRING"] == ""
    assert "secrets.token_urlsafe" in ENV_EXAMPLE  # it says how to generate them
    with pytest.raises(MissingVariable, match=r"HOST_UID.*make env"):
        load_compose(example)
    filled = {**example, "HOST_UID": "1000", "HOST_GID": "1000"}
    with pytest.raises(MissingVariable, match=r"POSTGRES_PASSWORD.*make env generates one"):
        load_compose(filled)


def test_make_env_writes_the_host_user_and_fresh_secrets_once(tmp_path: Path):
    shutil.copy2(ROOT / ".env.example", tmp_path / ".env.example")
    (tmp_path / "docker").mkdir()
    shutil.copy2(ROOT / "docker" / "make_env.py", tmp_path / "docker" / "make_env.py")
    make_env = ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "env"]
    subprocess.run(make_env, check=True, capture_output=True, text=True)
    env_file = tmp_path / ".env"
    first = env_file.read_text()
    values = read_env_file(first)
    assert (values["HOST_UID"], values["HOST_GID"]) == (str(os.getuid()), str(os.getgid()))
    assert len(values["POSTGRES_PASSWORD"]) >= 40 and re.fullmatch(r"[\w-]+", values["POSTGRES_PASSWORD"])
    assert re.fullmatch(r"synth2:[\w-]{40,}", values["PREFECT_API_AUTH_STRING"])
    assert env_file.stat().st_mode & 0o777 == 0o600
    postgres = load_compose(values)["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    subprocess.run(make_env, check=True, capture_output=True)
    assert env_file.read_text() == first  # never overwritten


# --- The stack, natively ----------------------------------------------------------------------------


@dataclass
class Stack:
    base: Path
    env: dict[str, str]  # the test's .env
    compose: dict  # docker-compose.yml interpolated from it
    host: tuple[int, int]  # HOST_UID, HOST_GID
    pg_port: int
    mlflow_url: str
    prefect_api: str
    workspace: Path  # the checkout the worker mounts at /app
    names: dict[str, str]  # container-side addresses -> native ones
    image_venv: Path  # the image's Python environment: this venv's packages, runnable by the host UID
    python_env: dict[str, str]  # what that environment's interpreter needs (tests/checkout.py)

    def process_env(self, *layers: dict[str, str]) -> dict[str, str]:
        """The layers merged, later ones winning, with the PATH of a synth2 container (its Python
        environment, then the system's)."""
        env = {key: value for layer in layers for key, value in layer.items()}
        return {**env, "PATH": f"{self.image_venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", **self.python_env}

    def worker_names(self, webserver_port: int) -> dict[str, str]:
        return {
            **self.names,
            "127.0.0.1:8080": f"127.0.0.1:{webserver_port}",
            "/app": str(self.workspace),
            "/home/synth2": str(self.base / "worker-home"),
        }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("the native compose stack runs its worker as another UID, which needs root")
    if not reachable_by_all(ROOT):  # the venv's editable install points here
        pytest.skip(
            f"the native stack's services run as another UID, which cannot reach {ROOT}: `chmod o+x` it "
            "and every directory above it (.ci/run does it for the checkout it runs in)"
        )
    # Not pytest's tmp_path: its root is private to us, and the host UID must reach these files.
    base = Path(tempfile.mkdtemp(prefix="synth2-compose-"))
    base.chmod(0o755)
    host = unused_ids()
    env = {
        **read_env_file(ENV_EXAMPLE),
        "HOST_UID": str(host[0]),
        "HOST_GID": str(host[1]),
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASSWORD": PG_PASSWORD,
        "PREFECT_API_AUTH_STRING": AUTH_STRING,
        "MLFLOW_PORT": str(free_port()),
        "PREFECT_PORT": str(free_port()),
    }
    compose = load_compose(env)
    image_venv, python_env = portable_environment(base / "image")
    workspace = copy_checkout(make_project(base / "workspace"), venv=image_venv)
    chown_tree(workspace, host)
    for name in ("worker-home", "mlflow-home", "mlartifacts", "prefect-home"):
        (base / name).mkdir()
        (base / name).chmod(0o1777)  # as the image makes /home/synth2 and /mlartifacts
    services = compose["services"]
    try:
        with contextlib.ExitStack() as running:
            pg_port = running.enter_context(postgres_cluster(base, PG_USER, PG_PASSWORD))
            mlflow_port, mlflow_container_port = published_port(services["mlflow"])
            prefect_port, prefect_container_port = published_port(services["prefect-server"])
            names = {
                "postgres:5432": f"127.0.0.1:{pg_port}",
                "mlflow:5000": f"127.0.0.1:{mlflow_port}",
                "prefect-server:4200": f"127.0.0.1:{prefect_port}",
            }
            stack = Stack(
                base,
                env,
                compose,
                host,
                pg_port,
                f"http://127.0.0.1:{mlflow_port}",
                f"http://127.0.0.1:{prefect_port}/api",
                workspace,
                names,
                image_venv,
                python_env,
            )
            # MLflow: the image's /app is the checkout (here the workspace's copy, which the host user can
            # read: its uvicorn workers import flows.ui from it); it runs as the host user like the worker.
            mlflow_names = {
                **names,
                "/app": str(workspace),
                "/home/synth2": str(base / "mlflow-home"),
                "/mlartifacts": str(base / "mlartifacts"),
            }
            mlflow = services["mlflow"]
            mlflow_env = stack.process_env(
                service_env(), localized(image_environment(), mlflow_names), native_environment(mlflow, mlflow_names)
            )
            mlflow_cmd = native_command(mlflow["command"], mlflow_names, (mlflow_container_port, mlflow_port))
            mlflow_log = base / "mlflow.log"
            mlflow_proc = running.enter_context(started(mlflow_cmd, mlflow_env, mlflow_log, run_as(user_ids(mlflow))))
            # The Prefect server's image runs as root, with its own PREFECT_HOME.
            server = services["prefect-server"]
            server_env = service_env(PREFECT_HOME=str(base / "prefect-home"), **native_environment(server, names))
            server_env["PATH"] = f"{BIN}:{server_env['PATH']}"  # the image's prefect: this venv's
            server_cmd = native_command(server["command"], names, (prefect_container_port, prefect_port))
            prefect_log = base / "prefect-server.log"
            prefect_proc = running.enter_context(started(server_cmd, server_env, prefect_log))
            wait_healthy(mlflow_proc, f"{stack.mlflow_url}/health", mlflow_log)  # both start meanwhile
            wait_healthy(prefect_proc, f"{stack.prefect_api}/health", prefect_log)
            for proc in (mlflow_proc, prefect_proc):
                assert listening_addresses(proc.pid) <= {"127.0.0.1"}, listening_addresses(proc.pid)
            yield stack
    finally:
        shutil.rmtree(base, ignore_errors=True)


def healthcheck(stack: Stack, service: str, names: dict[str, str], **extra_env: str) -> subprocess.CompletedProcess:
    """The service's compose healthcheck, run natively with the service's environment."""
    definition = stack.compose["services"][service]
    env = {**service_env(), **native_environment(definition, names), **extra_env}
    return subprocess.run(healthcheck_command(definition, names), env=env, capture_output=True, text=True, timeout=30)


def basic_auth(auth_string: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


@pytest.mark.slow
def test_healthchecks_pass_against_the_native_stack(stack: Stack):
    postgres = healthcheck(stack, "postgres", stack.names, PGPORT=str(stack.pg_port))
    assert postgres.returncode == 0 and postgres.stdout.split() == ["1", "1"], postgres.stderr
    wrong = healthcheck(stack, "postgres", stack.names, PGPORT=str(stack.pg_port), POSTGRES_PASSWORD="wrong")
    assert wrong.returncode != 0  # the password is really checked: the test's URL-breaking one got in
    mlflow_port, container_port = published_port(stack.compose["services"]["mlflow"])
    mlflow = healthcheck(stack, "mlflow", {f"127.0.0.1:{container_port}": f"127.0.0.1:{mlflow_port}"})
    assert mlflow.returncode == 0, mlflow.stderr
    prefect_port, container_port = published_port(stack.compose["services"]["prefect-server"])
    prefect = healthcheck(stack, "prefect-server", {f"127.0.0.1:{container_port}": f"127.0.0.1:{prefect_port}"})
    assert prefect.returncode == 0, prefect.stderr


@pytest.mark.slow
def test_prefect_server_wants_the_auth_string_and_refuses_other_origins(stack: Stack):
    pool = f"{stack.prefect_api}/work_pools/no-such-pool"
    assert http_status(pool, "GET", {}) == 401  # reads too: another local user cannot look either
    assert http_status(pool, "GET", basic_auth("synth2:wrong")) == 401
    assert http_status(pool, "GET", basic_auth(AUTH_STRING)) == 404
    assert_refuses_other_origins(stack.prefect_api, AUTH_STRING)


@pytest.mark.slow
def test_mlflow_server_refuses_other_origins_and_hosts(stack: Stack):
    create = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/create"
    body = json.dumps({"name": "cross-origin"}).encode()
    assert http_status(create, "POST", {"Origin": OTHER_ORIGIN, "Content-Type": "application/json"}, body) == 403
    port = stack.mlflow_url.rsplit(":", 1)[1]
    # A page another port of this host serves (a notebook, a dev server): MLflow alone lets localhost in.
    other_port = f"http://127.0.0.1:{int(port) + 1}"
    assert http_status(create, "POST", {"Origin": other_port, "Content-Type": "application/json"}, body) == 403
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):  # the UI's own requests
        named = json.dumps({"name": f"from {own}"}).encode()
        assert http_status(create, "POST", {"Origin": own, "Content-Type": "application/json"}, named) == 200
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/get?experiment_id=0"
    assert http_status(search, "GET", {"Host": f"127.0.0.1:{port}"}) == 200
    assert http_status(search, "GET", {"Host": f"evil.example:{port}"}) == 403  # a DNS-rebinding page's Host


# --- The worker as the host user, then the host's make run ----------------------------------------


def worker_process(stack: Stack, webserver_port: int, log: Path) -> subprocess.Popen:
    """The compose worker's command as its `user:`, with the image's environment and its own."""
    worker = stack.compose["services"]["worker"]
    names = stack.worker_names(webserver_port)
    env = stack.process_env(
        localized(image_environment(), names),
        native_environment(worker, names),
        {
            # A /var/tmp of the container's own (DVC's site cache), as the container has.
            "DVC_SITE_CACHE_DIR": str(stack.base / "worker-home" / "var-tmp-dvc"),
            # Poll every second, not every 10 s: the test waits less, the worker works the same.
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        },
    )
    cwd = names["/app"] if worker["working_dir"] == "/app" else worker["working_dir"]
    with open(log, "a") as out:
        return subprocess.Popen(
            native_command(worker["command"], names),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **run_as(user_ids(worker)),
        )


def stop_session(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)  # Prefect 3.9's worker can hang in its shutdown
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def prefect_client_settings(stack: Stack):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: stack.prefect_api, PREFECT_API_AUTH_STRING: AUTH_STRING})


@dataclass
class WorkerOutcome:
    flow_runs: list  # the two flow runs, in the order they started
    command_lines: list[str]  # of every process on the machine while the worker ran a flow
    healthcheck: subprocess.CompletedProcess
    foreign_files: list[str]  # files in the workspace that are not the host user's


@pytest.fixture(scope="module")
def worker_outcome(stack: Stack) -> WorkerOutcome:
    """Start the compose worker; create two flow runs at once; wait for both; stop the worker."""
    from prefect.client.orchestration import get_client

    webserver_port = free_port()
    log = stack.base / "worker.log"
    worker = worker_process(stack, webserver_port, log)
    try:
        command_lines: list[str] = []
        health = None

        async def submit_and_wait() -> list:
            nonlocal health
            async with get_client() as client:
                deadline = time.monotonic() + FLOW_RUN_TIMEOUT_S
                while True:  # registered by the worker's own `prefect deploy --all`
                    with contextlib.suppress(Exception):
                        deployment = await client.read_deployment_by_name(DEPLOYMENT)
                        break
                    assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                    await asyncio.sleep(1)
                # The tiny project has none of prefect.yaml's targets: every stage, nothing forced.
                every_stage = {"targets": None, "force": []}
                create = client.create_flow_run_from_deployment
                runs = [await create(deployment.id, parameters=every_stage) for _ in "ab"]
                while True:
                    states = [(await client.read_flow_run(r.id)).state for r in runs]
                    if any(s.is_running() for s in states) and health is None:
                        command_lines.extend(all_command_lines())
                        names = {"127.0.0.1:8080": f"127.0.0.1:{webserver_port}"}
                        health = healthcheck(stack, "worker", names)
                    if all(s.is_final() for s in states):
                        return sorted([await client.read_flow_run(r.id) for r in runs], key=lambda r: r.start_time)
                    assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                    await asyncio.sleep(1)

        with prefect_client_settings(stack):
            flow_runs = asyncio.run(submit_and_wait())
    finally:
        stop_session(worker)
    foreign = [
        str(path.relative_to(stack.workspace))
        for path in stack.workspace.rglob("*")
        if path.lstat().st_uid != stack.host[0] and not path.is_relative_to(stack.workspace / ".venv")
    ]
    return WorkerOutcome(flow_runs, command_lines, health, foreign)


def all_command_lines() -> list[str]:
    lines = []
    for process in psutil.process_iter(["cmdline"]):
        lines.append(" ".join(process.info["cmdline"] or []))
    return lines


@pytest.mark.slow
def test_worker_runs_queued_flow_runs_one_at_a_time_through_auth_and_csrf(stack: Stack, worker_outcome: WorkerOutcome):
    first, second = worker_outcome.flow_runs
    assert [r.state.type.value for r in (first, second)] == ["COMPLETED"] * 2, [r.state for r in (first, second)]
    assert second.start_time >= first.end_time  # --limit 1: the second waited in the queue, not dropped
    assert worker_outcome.healthcheck is not None and worker_outcome.healthcheck.returncode == 0

    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow_url)  # MLflow on Postgres, through the URL-encoded password
    experiments = [e.experiment_id for e in client.search_experiments()]
    # The second flow run found nothing stale, so it opened no MLflow run.
    for run, expected in ((first, [("FINISHED", "make_numbers,sum_numbers")]), (second, [])):
        found = client.search_runs(experiments, filter_string=f"tags.`synth2.prefect.flow_run_id` = '{run.id}'")
        parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
        assert [(r.info.status, r.data.tags["synth2.stages_ran"]) for r in parents] == expected


@pytest.mark.slow
def test_worker_leaves_the_checkout_to_the_host_user(stack: Stack, worker_outcome: WorkerOutcome):
    assert worker_outcome.foreign_files == []
    assert not (stack.workspace / ".prefect").exists()  # its Prefect home is the image's


@pytest.mark.slow
def test_no_secret_on_any_command_line(stack: Stack, worker_outcome: WorkerOutcome):
    secrets = {PG_PASSWORD, urllib.parse.quote(PG_PASSWORD, safe=""), AUTH_STRING.split(":", 1)[1]}
    assert worker_outcome.command_lines, "no snapshot was taken while a flow ran"
    for line in worker_outcome.command_lines + all_command_lines():
        assert not any(secret in line for secret in secrets), line


@pytest.mark.slow
def test_host_make_run_works_after_the_worker(stack: Stack, worker_outcome: WorkerOutcome):
    """The host user (the UID of .env) edits params and runs `make run` on the checkout the worker
    used: every stage reruns, writing over what the worker wrote, with the Makefile's .prefect."""
    params = stack.workspace / "params.yaml"
    params.write_text(params.read_text().replace("seed: 1", "seed: 2"))
    home = stack.base / "host-home"
    home.mkdir()
    os.chown(home, *stack.host)
    # A login's environment; make puts .venv/bin on PATH itself.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "USER": "host", "LANG": "C.UTF-8"}
    env.update(stack.python_env)
    result = subprocess.run(
        ["make", "run"],
        cwd=stack.workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **run_as(stack.host),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 stage(s) ran" in result.stdout
    assert json.loads((stack.workspace / "metrics" / "total.json").read_text()) == {"total": 20}  # 2+3+4+5+6


@pytest.mark.slow
def test_worker_refuses_a_checkout_that_another_worker_serves(stack: Stack, worker_outcome: WorkerOutcome):
    log = stack.base / "refused-worker.log"
    with open(stack.workspace / ".synth2-worker.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as `make serve` holds it
        worker = worker_process(stack, free_port(), log)
        try:
            code = worker.wait(timeout=60)
        finally:
            stop_session(worker)
    assert code == 75
    assert "another Prefect worker serves this checkout" in log.read_text()
