"""Where `make ui` (flows/ui.py) lands: the training runs of the synth2 experiment.

MLflow 3's home page and experiment pages start in its GenAI
view (traces, "Detect Issues") unless the URL says otherwise: the UI reads the view from the page's
`workflowType` query parameter before the choice it remembers in the browser (`mlflow.workflowType` in
localStorage, GenAI by default). So `make ui` prints the address of the experiment's runs table in the
model training view, `…/#/experiments/<id>/runs?workflowType=machine_learning`, then serves the UI.
The experiment is created first if no run was recorded yet (as the sync creates it: training kind,
artifacts beside the store), and a store whose checkout moved is relinked (synth2.tracking.relink).
"""

from __future__ import annotations

from pathlib import Path

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


def landing_address(backend_store_uri: str, host: str, port: int) -> str:
    """The runs table to open; the experiment created (and a moved store relinked) first."""
    from synth2.tracking.store import absolute_uri, project_root

    root = project_root()
    experiment_id = landing_experiment(absolute_uri(backend_store_uri, root), root)
    return runs_url(ui_address(host, port), experiment_id)
