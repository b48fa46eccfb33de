"""docker-compose.yml: its shape, and its services run natively (no Docker engine here).

The native test starts a throwaway Postgres on 127.0.0.1, creates the databases with the compose
init script, and runs the Prefect server (and the MLflow server where psycopg2 is installed) on it
with the connection URLs of the compose file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.services import BIN, background, free_port, listening_addresses, service_env

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (ROOT / ".env.example").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
PG_USER, PG_PASSWORD = "synth2", "test-only"


def test_compose_has_the_stack_with_healthchecks_and_loopback_ports():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "mlflow", "prefect-server", "worker", "ray-head", "ray-worker"}
    assert all("healthcheck" in s for s in services.values())
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    assert "postgresql+psycopg2://" in " ".join(services["mlflow"]["command"])
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://"
    )
    worker = " ".join(services["worker"]["command"])
    assert "deploy --all" in worker and "worker start --pool synth2-local" in worker
    assert services["worker"]["depends_on"] == {
        "prefect-server": {"condition": "service_healthy"},
        "mlflow": {"condition": "service_healthy"},
    }


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


def test_compose_takes_configuration_from_the_env_file_and_commits_no_secret():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used <= set(ENV_EXAMPLE), used - set(ENV_EXAMPLE)
    assert services_env_literal_passwords(COMPOSE) == []
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == ".env"


def services_env_literal_passwords(compose: dict) -> list[str]:
    return [
        f"{name}.{key}"
        for name, svc in compose["services"].items()
        for key, value in (svc.get("environment") or {}).items()
        if "PASSWORD" in key and not str(value).startswith("${")
    ]


@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """A throwaway Postgres cluster on 127.0.0.1 with the compose databases; yields its port."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("Postgres binaries (initdb, pg_ctl) not installed")
    base = Path(tempfile.mkdtemp(prefix="synth2-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run(
        [*as_postgres, "initdb", "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_postgres,
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(base / "log"),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {base}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                PG_USER,
                "-d",
                "postgres",
                "-q",
                "-f",
                str(ROOT / "docker" / "postgres-init.sql"),
            ],
            check=True,
            capture_output=True,
        )
        yield port
    finally:
        # pg_ctl signals the postmaster by the PID in its pid file.
        subprocess.run([*as_postgres, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def compose_url(service: str, port: int) -> str:
    """The service's database URL from docker-compose.yml, pointed at the native Postgres."""
    if service == "mlflow":
        url = next(
            a.split("=", 1)[1] for a in COMPOSE["services"]["mlflow"]["command"] if a.startswith("--backend-store-uri")
        )
    else:
        url = COMPOSE["services"]["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    return (
        url.replace("${POSTGRES_USER}", PG_USER)
        .replace("${POSTGRES_PASSWORD}", PG_PASSWORD)
        .replace("@postgres:5432", f"@127.0.0.1:{port}")
    )


@pytest.mark.slow
def test_prefect_server_on_postgres_stores_work_pools(postgres: int, tmp_path: Path):
    """The compose Prefect server's database URL works: migrations run, writes read back.
    (Registering prefect.yaml's deployments is tested against the SQLite server in test_flows.py.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    env = service_env(PREFECT_HOME=str(tmp_path), PREFECT_API_DATABASE_CONNECTION_URL=compose_url("prefect", postgres))
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background(cmd, env, f"http://127.0.0.1:{port}/api/health", tmp_path / "server.log") as proc:
        assert listening_addresses(proc.pid) <= {"127.0.0.1"}

        async def pool_types() -> dict[str, str]:
            async with get_client() as client:
                await client.create_work_pool(WorkPoolCreate(name="synth2-local", type="process"))
                return {p.name: p.type for p in await client.read_work_pools()}

        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
            assert asyncio.run(pool_types())["synth2-local"] == "process"


@pytest.mark.slow
def test_mlflow_server_on_postgres_records_a_run(postgres: int, tmp_path: Path):
    env = service_env()
    probe = subprocess.run([sys.executable, "-c", "import psycopg2"], env=env, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("psycopg2 not installed (the compose image installs psycopg2-binary)")
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
        compose_url("mlflow", postgres),
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    with background(cmd, env, f"http://127.0.0.1:{port}/health", tmp_path / "server.log"):
        from mlflow import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment_id = client.create_experiment("compose-check")
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "m", 1.0)
        with contextlib.suppress(Exception):
            client.set_terminated(run.info.run_id)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
