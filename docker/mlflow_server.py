"""`mlflow server` on the compose stack's Postgres, its password kept off every command line.

    python docker/mlflow_server.py [mlflow server options]

The backend URL is built here from POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, POSTGRES_USER and
POSTGRES_PASSWORD, with SQLAlchemy's URL (which URL-encodes the password, so `@ : / # %` survive), and
reaches `mlflow server` in MLFLOW_BACKEND_STORE_URI, which it reads when --backend-store-uri is absent
and passes on to its uvicorn workers in their environment. A command line is readable by every user
of the machine (`ps`); an environment only by the process's own user.
"""

from __future__ import annotations

import os
import sys

from sqlalchemy import URL


def backend_store_uri(environ: dict[str, str]) -> str:
    return URL.create(
        "postgresql+psycopg2",
        username=environ["POSTGRES_USER"],
        password=environ["POSTGRES_PASSWORD"],
        host=environ["POSTGRES_HOST"],
        port=int(environ.get("POSTGRES_PORT", "5432")),
        database=environ["POSTGRES_DB"],
    ).render_as_string(hide_password=False)


def main(argv: list[str]) -> None:
    if any(arg.startswith("--backend-store-uri") for arg in argv):
        sys.exit("error: the backend store URI comes from the POSTGRES_* variables, not the command line")
    env = dict(os.environ)
    env["MLFLOW_BACKEND_STORE_URI"] = backend_store_uri(env)
    del env["POSTGRES_PASSWORD"]  # now inside the URL; one copy is enough
    os.execvpe("mlflow", ["mlflow", "server", *argv], env)


if __name__ == "__main__":
    main(sys.argv[1:])
