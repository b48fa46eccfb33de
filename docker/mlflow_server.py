"""`mlflow server` on the compose stack's Postgres, its password kept off every command line, answering
its own origins only.

    python docker/mlflow_server.py [mlflow server options]

The backend URL is built here from POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, POSTGRES_USER and
POSTGRES_PASSWORD, with SQLAlchemy's URL (which URL-encodes the password, so `@ : / # %` survive), and
reaches `mlflow server` in MLFLOW_BACKEND_STORE_URI, which it reads when --backend-store-uri is absent
and passes on to its uvicorn workers in their environment. A command line is readable by every user
of the machine (`ps`); an environment only by the process's own user.

MLflow lets every localhost origin through whatever --cors-allowed-origins says, so any page another port
of the host serves could create, edit and delete runs; the server runs through the app `make ui` uses
(flows.ui: OwnOriginOnly refuses an Origin that --cors-allowed-origins does not list). Clients that send
no Origin (the worker, the MLflow client on the host) are untouched.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sqlalchemy import URL

ROOT = Path(__file__).resolve().parents[1]  # /app in the image: flows/ is there


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
    for option in ("--backend-store-uri", "--app-name"):
        if any(arg.startswith(option) for arg in argv):
            sys.exit(f"error: docker/mlflow_server.py sets {option} itself; remove it from the command line")
    os.environ["MLFLOW_BACKEND_STORE_URI"] = backend_store_uri(os.environ)
    del os.environ["POSTGRES_PASSWORD"]  # now inside the URL; one copy is enough
    # MLflow's uvicorn workers import the app (flows.ui:create_app) from the checkout, whatever their cwd.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(ROOT))
    from flows.ui import run_guarded

    run_guarded(["server", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
