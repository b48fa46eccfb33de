"""A throwaway Postgres cluster on 127.0.0.1, from Debian's server binaries (.ci/run installs them)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import free_port


def postgres_binary(name: str) -> str:
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4].split(".")[0]))
    found = shutil.which(name) or (versions or [None])[-1]  # the newest installed
    if found is None:
        message = f"Postgres server binaries ({name}) not installed (Debian: apt-get install postgresql)"
        if os.environ.get("CI"):  # .ci/run installs them; a skip there would hide a missing install step
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.contextmanager
def postgres_cluster(base: Path, user: str, password: str) -> Iterator[int]:
    """A Postgres cluster on 127.0.0.1 that wants `password` over TCP, with the compose init script
    run in it; yields its port. As root, initdb and the server run as the `postgres` account."""
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pgdir = base / "postgres"
    pgdir.mkdir()
    pwfile = pgdir / "pwfile"
    pwfile.write_text(password + "\n")
    if as_postgres:
        shutil.chown(pgdir, "postgres")
        shutil.chown(pwfile, "postgres")
    pwfile.chmod(0o600)
    data, port = pgdir / "data", free_port()
    subprocess.run(
        [*as_postgres, initdb, "-D", str(data), "-U", user, f"--pwfile={pwfile}", "-E", "UTF8"]
        + ["--auth-local=trust", "--auth-host=scram-sha-256"],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {pgdir}"
    subprocess.run(
        [*as_postgres, pg_ctl, "-D", str(data), "-l", str(pgdir / "log"), "-w", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        init = Path(__file__).resolve().parents[1] / "docker" / "postgres-init.sql"
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "postgres", "-q", "-f", str(init)],
            env={**os.environ, "PGPASSWORD": password},
            check=True,
            capture_output=True,
        )
        yield port
    finally:  # pg_ctl signals the postmaster by the PID in its pid file
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
