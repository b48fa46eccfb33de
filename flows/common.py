"""What both flows share: the project root, the DVC stage order, metrics, the run summary."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth2 import tracking
from synth2.errors import Synth2Error
from synth2.params import Params, load_params

KEY_METRICS_PER_FILE = 8


class _KnownFailureFilter(logging.Filter):
    """Prefect logs a failed task or flow run with its traceback. For a Synth2Error (bad params, a failed
    gate: the stage has said what and where in one line) and for an interrupt, those are frames of
    Prefect's engine that bury the line: keep the message, drop the traceback. Anything else keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import ExternalSignal

        if record.exc_info and isinstance(record.exc_info[1], Synth2Error | KeyboardInterrupt | ExternalSignal):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_known_failures() -> None:
    """Install _KnownFailureFilter on Prefect's run loggers (once; the command-line entry points call it)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _KnownFailureFilter) for f in logger.filters):
            logger.addFilter(_KnownFailureFilter())


def project_root(root: str | None) -> Path:
    """The DVC project the flow reproduces: `root`, or the working directory (where `make run` and the
    deployments' `set_working_directory` step start)."""
    return Path(root).resolve() if root else Path.cwd()


def load_project_params(root: Path) -> Params:
    return load_params(root / "params.yaml")


def stage_graph(root: Path, targets: list[str] | None = None) -> dict[str, set[str]]:
    """{stage: the stages it depends on}, in DVC's dependency order (ties broken by dvc.yaml order),
    limited to `targets` and everything upstream of them."""
    import networkx as nx
    from dvc.repo import Repo

    def address(stage: Any) -> str:
        # Stage.addressing is relative to the current directory; the tasks run DVC in `root`.
        dvcfile = os.path.relpath(stage.path, root)
        return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        by_name = {address(stage): stage for stage in graph.nodes}
        position = {name: i for i, name in enumerate(by_name)}
        if targets:
            unknown = [t for t in targets if t not in by_name]
            if unknown:
                raise Synth2Error(f"unknown stage(s) {unknown}; dvc.yaml has {sorted(by_name)}")
            wanted = set(targets)
            for target in targets:
                wanted |= {address(s) for s in nx.descendants(graph, by_name[target])}
            graph = graph.subgraph([by_name[n] for n in wanted])
        ordered = nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: f"{position[address(s)]:05d}")
        return {address(s): {address(u) for u in graph.successors(s)} for s in ordered}


def stale_stages(root: Path, graph: dict[str, set[str]], forced: set[str]) -> set[str]:
    """The stages DVC would run: what `dvc status` reports changed (one call for the whole pipeline),
    the forced ones, and everything downstream of them (their inputs are about to change)."""
    from dvc.repo import Repo

    # DVC resolves stage names against the working directory (the flow may run elsewhere, e.g. in tests);
    # no task runs yet, so changing it briefly is safe. One status of the whole project, then the graph's
    # stages: status with the stages as targets resolves each one apart (5.1 s against 1.2 s for 19 stages).
    with contextlib.chdir(root), Repo(".") as repo:
        changed = set(repo.status()) & set(graph)
    stale: set[str] = set()
    for stage in graph:  # dependency order: upstream stages are decided first
        if stage in changed or stage in forced or graph[stage] & stale:
            stale.add(stage)
    return stale


def dvc_metrics(root: Path, rev: str | None = None) -> dict[str, dict[str, float]]:
    """Numeric metrics per metrics file as DVC reads them (`dvc metrics show`; `rev` may name a DVC
    experiment). Per file, because dvc.api.metrics_show merges files and the VLM variants share keys."""
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            shown = repo.metrics.show(revs=[rev] if rev else None, on_error="ignore")
    except Exception:  # no metrics yet, or an experiment DVC cannot resolve
        return {}
    # Keyed by revision; the workspace ("") comes along unless it is the one asked for.
    chosen = [v for k, v in shown.items() if (k not in ("", "workspace")) == bool(rev)]
    files = (chosen[0] if chosen else {}).get("data", {})
    return {path: tracking.numeric_metrics(entry.get("data") or {}) for path, entry in sorted(files.items())}


@dataclass
class TrackedRun:
    """The flow's parent MLflow run, recorded in the tracking spool and sent when the flow ends."""

    key: str | None  # its spool key; None when tracking is off
    root: Path
    tracking_uri: str
    run_id: str | None = None  # known once sent
    experiment_id: str | None = None
    report_run_id: str | None = None  # the `report` stage's run, whose artifact is the HTML report
    message: str = ""

    @classmethod
    def start(cls, params: Params, root: Path, name: str, tags: dict[str, str], run_params: dict | None = None):
        uri = tracking.resolve_tracking_uri(params.tracking.tracking_uri, root)
        key = tracking.start_pipeline_run(params, name, tags, run_params, root) if tracking.enabled() else None
        return cls(key, root, uri)

    def stage_env(self, flow_run_id: str | None) -> dict[str, str]:
        """What the stage processes need to nest their runs under this one."""
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri}
        if self.key:
            env[tracking.ENV_PARENT_SPOOL_KEY] = self.key
        if flow_run_id:
            env[tracking.ENV_FLOW_RUN] = flow_run_id
        return env

    def finish(self, status: str, metrics: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> None:
        """Close the run and send the spool (this run and its stages' runs); never raises."""
        if not self.key:
            return
        tracking.end_pipeline_run(self.key, status, metrics, tags, self.root)
        result = tracking.send_spool(self.root)
        self.run_id = result.run_ids.get(self.key)
        self.experiment_id = result.experiment_ids.get(self.key)
        self.report_run_id = next((rid for key, rid in result.run_ids.items() if key.endswith("-report")), None)
        self.message = result.message


def summary_markdown(
    title: str,
    outcomes: list[dict[str, Any]],
    metrics: dict[str, dict[str, float]],
    run: TrackedRun | None,
    extra: str = "",
) -> str:
    """The run's markdown artifact; `run` is None when nothing was stale (no MLflow run was opened)."""
    ran = [o["stage"] for o in outcomes if o["ran"]]
    lines = [
        f"# {title}",
        "",
        f"**{len(ran)} ran, {len(outcomes) - len(ran)} skipped** (DVC found them unchanged).",
        "",
    ]
    if extra:
        lines += [extra, ""]
    if outcomes:
        lines += ["| stage | DVC | seconds |", "|---|---|---:|"]
        lines += [f"| {o['stage']} | {'ran' if o['ran'] else 'skipped'} | {o['seconds']:.1f} |" for o in outcomes]
        lines.append("")
    if metrics:
        lines += ["## Key metrics", "", "| file | metric | value |", "|---|---|---:|"]
        for path, values in metrics.items():
            for key, value in list(values.items())[:KEY_METRICS_PER_FILE]:
                lines.append(f"| {path} | {key} | {value:.4g} |")
        lines.append("")
    if run is not None and run.run_id:
        lines += [
            "## MLflow",
            "",
            f"Run `{run.run_id}` in experiment {run.experiment_id} (store `{run.tracking_uri}`).",
            f"Open it with `make ui`: {tracking.run_url(run.run_id, run.experiment_id)}",
            "",
        ]
        if run.report_run_id:
            url = tracking.run_url(run.report_run_id, run.experiment_id) + "/artifacts/reports/pipeline.html"
            lines += [f"The run's HTML report (metrics, curves, diversity, samples, examples): {url}", ""]
    elif run is not None and run.key:
        lines += ["## MLflow", "", f"Not sent yet: {run.message}.", ""]
    return "\n".join(lines)
