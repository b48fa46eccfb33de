"""`make ui`: MLflow's UI on the project's store, opened at the training runs of the synth2 experiment.

    python -m synth2.tracking.ui --backend-store-uri URI --host 127.0.0.1 --port 5000 [mlflow ui options]

Every option goes to `mlflow ui` unchanged. MLflow 3's home page and experiment pages start in its GenAI
view (traces, "Detect Issues") unless the URL says otherwise: the UI reads the view from the page's
`workflowType` query parameter before the choice it remembers in the browser (`mlflow.workflowType` in
localStorage, GenAI by default). So this prints the address of the experiment's runs table in the model
training view, `…/#/experiments/<id>/runs?workflowType=machine_learning`, then becomes `mlflow ui`.
The experiment is created first if no run was recorded yet (as the sync creates it: training kind,
artifacts beside the store), and a store whose checkout moved is relinked (synth2.tracking.relink).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from synth2.errors import user_errors

WORKFLOW = "workflowType=machine_learning"  # the UI's "Model training" view


def runs_url(ui: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training view."""
    return f"{ui}/#/experiments/{experiment_id}/runs?{WORKFLOW}"


def ui_address(host: str, port: int) -> str:
    """The address a browser on this machine opens (a server on every interface answers on loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def landing_experiment(uri: str, root: Path) -> str:
    """The id of the project's experiment in the store, created (as the sync creates it) when missing."""
    from synth2.params import load_params
    from synth2.tracking.relink import relink_if_moved
    from synth2.tracking.sync import Session

    name = load_params(root / "params.yaml").tracking.experiment
    moved = relink_if_moved(uri)
    if moved is not None:
        print(f"relinked {moved.line()}", flush=True)
    return Session().experiment(uri, name, root)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m synth2.tracking.ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend-store-uri", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    known, _ = parser.parse_known_args(argv)
    with user_errors("make ui"):
        from synth2.tracking.store import absolute_uri, project_root

        root = project_root()
        uri = absolute_uri(known.backend_store_uri, root)
        experiment_id = landing_experiment(uri, root)
    url = runs_url(ui_address(known.host, known.port), experiment_id)
    print(f"MLflow UI, the synth2 training runs: {url}", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", *argv])
    return 0  # not reached: the process is mlflow ui now


if __name__ == "__main__":
    sys.exit(main())
