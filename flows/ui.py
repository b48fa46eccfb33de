"""`make ui`: MLflow's UI on the project's tracking store, answering its own origin and host only.

    python -m flows.ui --port 5000 --backend-store-uri sqlite:///$PWD/mlflow.db

MLflow's own security options do half the job: --allowed-hosts refuses a foreign Host header (a page
that rebinds its name to 127.0.0.1), but --cors-allowed-origins only adds origins, and MLflow lets
every localhost origin through whatever it says (mlflow.server.security_utils.should_block_cors_request
and the CORS regexes of LOCALHOST_ORIGIN_PATTERNS): any page served by another local port (a notebook,
a dev server, a compromised package's server) could create, edit and delete experiments and runs.
So the UI runs through MLflow's plugin hook for server apps (--app-name, as MLflow's own basic-auth
app does): `create_app` wraps MLflow's ASGI app in OwnOriginOnly, which refuses every request whose
Origin is not one of --cors-allowed-origins, localhost ones included. Everything else (stores, the
uvicorn workers, their signals) is `mlflow ui` itself, run in this process. First it prints the address
to open: the synth2 experiment's training runs (synth2.tracking.ui). The compose stack's `mlflow server`
runs through the same app (docker/mlflow_server.py).

The app lives in flows/, importable from the checkout's root only (where make and MLflow's uvicorn
workers run), not in the installed package; so its `mlflow.app` entry point is declared by this
process (AppEntryPoint, an importlib.metadata finder) instead of the package's metadata. MLflow sees
it as it sees basic-auth; an MLflow that finds apps another way refuses `--app-name synth2-ui`
and starts nothing: the UI never serves unguarded.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from synth2.errors import user_errors
from synth2.tracking.ui import landing_address

APP_NAME = "synth2-ui"
APP = "flows.ui:create_app"  # a factory: uvicorn (--factory) calls it in each worker
HOST = "127.0.0.1"
REFUSED = b"Cross-origin request blocked: this MLflow server answers its own origin only"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class OwnOriginOnly:
    """ASGI middleware: a request that carries an Origin header other than `origins` gets 403.

    Browsers send Origin with every cross-origin request (fetch, XHR, CORS preflight, form POST,
    WebSocket) and with every same-origin request that changes state, so this refuses all a foreign
    page can send that could change or read data; the UI's own requests carry its own origin, and a
    client such as MlflowClient or curl sends none. "null" (sandboxed frames, file:// pages) is foreign.
    """

    def __init__(self, app: ASGIApp, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send) -> None:
        if scope["type"] in ("http", "websocket"):
            origin = dict(scope.get("headers", [])).get(b"origin")
            if origin is not None and origin.decode("latin-1") not in self.origins:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})  # uvicorn answers 403
                    return
                await send(
                    {"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": REFUSED})
                return
        await self.app(scope, receive, send)


def create_app() -> OwnOriginOnly:
    """MLflow's ASGI app behind OwnOriginOnly, the origins those `mlflow ui --cors-allowed-origins` set
    in MLFLOW_SERVER_CORS_ALLOWED_ORIGINS for its workers."""
    from mlflow.environment_variables import MLFLOW_SERVER_CORS_ALLOWED_ORIGINS
    from mlflow.server.fastapi_app import app

    origins = frozenset(o.strip() for o in (MLFLOW_SERVER_CORS_ALLOWED_ORIGINS.get() or "").split(",") if o.strip())
    if not origins or "*" in origins:
        raise SystemExit("error: the synth2-ui app needs its own origins in --cors-allowed-origins, no '*'")
    return OwnOriginOnly(app, origins)


def mlflow_ui_args(port: int, backend_store_uri: str) -> list[str]:
    """`mlflow ui` on 127.0.0.1:`port`, answering only the names of that address: a Host header or an
    Origin naming anything else (another port, a rebound host name) is refused."""
    hosts = [f"127.0.0.1:{port}", f"localhost:{port}"]
    return [
        "ui",
        "--backend-store-uri",
        backend_store_uri,
        "--host",
        HOST,
        "--port",
        str(port),
        # One user's browser: one uvicorn worker serves it (MLflow's default of 4 starts 4 copies of its app).
        "--workers",
        "1",
        "--allowed-hosts",
        ",".join(hosts),
        "--cors-allowed-origins",
        ",".join(f"http://{host}" for host in hosts),
    ]


class _AppDistribution(importlib.metadata.Distribution):
    """The metadata of a distribution that holds nothing but APP's `mlflow.app` entry point."""

    def read_text(self, filename: str) -> str | None:
        if filename == "METADATA":
            return f"Metadata-Version: 2.1\nName: {APP_NAME}\nVersion: 0\n"
        if filename == "entry_points.txt":
            return f"[mlflow.app]\n{APP_NAME} = {APP}\n"
        return None

    def locate_file(self, path: str | os.PathLike[str]) -> Path:
        return Path(path)


class AppEntryPoint(importlib.metadata.DistributionFinder):
    """Makes importlib.metadata.entry_points(group="mlflow.app"), which MLflow's CLI reads, list APP."""

    def find_spec(self, *args: object, **kwargs: object) -> None:
        return None  # finds no modules, only the distribution

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):  # noqa: B008 (the ABC's signature)
        return [_AppDistribution()] if context.name in (None, APP_NAME) else []


def run_guarded(args: list[str]) -> None:
    """The `mlflow` command line ARGS (`ui ...`, `server ...`) in this process, serving through this app."""
    sys.meta_path.append(AppEntryPoint())  # before mlflow.cli, which lists the apps when imported
    from mlflow.cli import cli

    cli.main(args=[*args, "--app-name", APP_NAME], prog_name="mlflow")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=5000, help="the UI's port on 127.0.0.1")
    parser.add_argument("--backend-store-uri", required=True, help="the tracking store, e.g. sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    with user_errors("make ui"):
        address = landing_address(args.backend_store_uri, HOST, args.port)
    print(f"MLflow UI, the synth2 training runs: {address}", flush=True)
    # No job runner (huey consumers for MLflow's GenAI judges and trace rollups): synth2 runs none, and
    # it is three more processes to start.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    run_guarded(mlflow_ui_args(args.port, args.backend_store_uri))


if __name__ == "__main__":
    sys.exit(main())
