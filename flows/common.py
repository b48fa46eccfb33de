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

# The headline columns of the summary: (subset, metric, heading); a profile without a metric skips it.
HEADLINE = (("overall", "cider", "overall CIDEr"), ("unseen", "attr_colour_shape", "unseen colour+shape"))
# What the parent MLflow run carries of metrics/evaluate.json, per split and variant, so that pipeline
# runs compare side by side: captioning (CIDEr) and attribute accuracy, on every subset of the test set.
RUN_HEADLINE_METRICS = ("cider", "attr_colour_shape", "attr_all")


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


def stage_graph(root: Path, targets: list[str] | None = None, repo: Any = None) -> dict[str, set[str]]:
    """{stage: the stages it depends on}, in DVC's dependency order (ties broken by dvc.yaml order),
    limited to `targets` and everything upstream of them (`repo`: an open DVC Repo of `root`)."""
    import networkx as nx
    from dvc.repo import Repo

    def address(stage: Any) -> str:
        # Stage.addressing is relative to the current directory; the tasks run DVC in `root`.
        dvcfile = os.path.relpath(stage.path, root)
        return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"

    with contextlib.nullcontext(repo) if repo is not None else Repo(str(root)) as repo:
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


def stale_stages(root: Path, graph: dict[str, set[str]], forced: set[str], repo: Any = None) -> set[str]:
    """The stages DVC would run: what `dvc status` reports changed (one call for the whole pipeline),
    the forced ones, and everything downstream of them (their inputs are about to change). `repo`: an open
    DVC Repo of `root`, opened with `root` as the working directory."""
    from dvc.repo import Repo

    # DVC resolves stage names against the working directory (the flow may run elsewhere, e.g. in tests);
    # no task runs yet, so changing it briefly is safe. One status of the whole project, then the graph's
    # stages: status with the stages as targets resolves each one apart (5.1 s against 1.2 s for 19 stages).
    with contextlib.chdir(root), contextlib.nullcontext(repo) if repo is not None else Repo(".") as repo:
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

    def finish(
        self,
        status: str,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        artifacts: list[Path] | None = None,
    ) -> None:
        """Close the run, logging `artifacts` under `reports/`, and send the spool (this run and its
        stages' runs); never raises."""
        if not self.key:
            return
        tracking.end_pipeline_run(self.key, status, metrics, tags, self.root, artifacts or [], "reports")
        result = tracking.send_spool(self.root)
        self.run_id = result.run_ids.get(self.key)
        self.experiment_id = result.experiment_ids.get(self.key)
        self.report_run_id = next((rid for key, rid in result.run_ids.items() if key.endswith("-report")), None)
        self.message = result.message


def read_evaluation(root: Path, rev: str | None = None) -> dict[str, Any] | None:
    """metrics/evaluate.json of the workspace (or of a DVC experiment `rev`); None when there is none."""
    import json

    from synth2 import dvc_runner, paths

    try:
        if rev:
            return json.loads(dvc_runner.read_file(root, paths.EVAL_METRICS, rev))
        return json.loads((root / paths.EVAL_METRICS).read_text())
    except Exception:  # not produced (yet), or unreadable: the summary says what it has
        return None


def headline_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """The parent run's metrics from metrics/evaluate.json: `SPLIT.VARIANT.SUBSET.METRIC` for both
    splits and every variant, `gain.SPLIT.VARIANT.SUBSET.METRIC` (relative to the baseline, as
    evaluate.json has it), and the champion's validation score and margin."""
    metrics: dict[str, float] = {}
    for split in ("test", "val"):
        for variant, scores in (evaluation.get(split) or {}).items():
            for subset, values in scores.items():
                for metric in RUN_HEADLINE_METRICS:
                    if isinstance(values, dict) and metric in values:
                        metrics[f"{split}.{variant}.{subset}.{metric}"] = values[metric]
        for variant, gains in ((evaluation.get("gain_over_baseline") or {}).get(split) or {}).items():
            for key, gain in gains.items():
                if key.rpartition(".")[2] in RUN_HEADLINE_METRICS:
                    metrics[f"gain.{split}.{variant}.{key}"] = gain
    champion = evaluation.get("champion") or {}
    if champion:
        metrics |= {"champion.value": champion["value"], "champion.margin": champion["margin"]}
    return metrics


def headline_markdown(evaluation: dict[str, Any]) -> list[str]:
    """The numbers a person opens the run for: per variant the test headline metrics and the gain over the
    baseline, then the champion and why (from metrics/evaluate.json)."""
    test, gains = evaluation.get("test") or {}, (evaluation.get("gain_over_baseline") or {}).get("test", {})
    columns = [c for c in HEADLINE if any(c[1] in (v.get(c[0]) or {}) for v in test.values())]
    if not test or not columns:
        return []
    lines = ["## Headline (test)", "", "| variant | " + " | ".join(f"{h} | vs baseline" for *_, h in columns) + " |"]
    lines.append("|---|" + "---:|---:|" * len(columns))
    for variant, scores in test.items():
        cells = []
        for subset, metric, _ in columns:
            value = (scores.get(subset) or {}).get(metric)
            gain = gains.get(variant, {}).get(f"{subset}.{metric}")
            cells += ["n/a" if value is None else f"{value:.3f}", "—" if gain is None else f"{gain:+.1%}"]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    champion = evaluation.get("champion")
    if champion:
        lines += [
            "",
            f"Champion, chosen on validation: **{champion['variant']}**, by {champion['metric']} = "
            f"{champion['value']:.3f}, {champion['margin']:.3f} ahead of the runner-up.",
        ]
    return [*lines, ""]


def summary_markdown(
    title: str,
    outcomes: list[dict[str, Any]],
    evaluation: dict[str, Any] | None,
    run: TrackedRun | None,
    extra: str = "",
    report: Path | None = None,
) -> str:
    """The run's markdown artifact: what ran, the headline numbers and the champion, where to look next.
    `run` is None when nothing was stale (no MLflow run was opened); `evaluation`: metrics/evaluate.json."""
    ran = [o["stage"] for o in outcomes if o["ran"]]
    lines = [f"# {title}", ""]
    if outcomes:
        lines += [
            f"**{len(ran)} ran, {len(outcomes) - len(ran)} up to date** (DVC re-runs a stage only when its code, "
            "inputs or params changed).",
            "",
        ]
    if extra:
        lines += [extra, ""]
    lines += headline_markdown(evaluation or {})
    if report is not None and report.exists():
        lines += [f"Report for people: `{report}` ({report.resolve().as_uri()}).", ""]
    lines += ["All metrics: `dvc metrics show`; the results table: `synth2 results`.", ""]
    if outcomes:
        lines += ["| stage | DVC | seconds |", "|---|---|---:|"]
        lines += [f"| {o['stage']} | {'ran' if o['ran'] else 'up to date'} | {o['seconds']:.1f} |" for o in outcomes]
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


def up_to_date(targets: list[str] | None, force: list[str] | None) -> list[str] | None:
    """The stages, when a run would do nothing: none forced, no DVC remote to pull from or push to, and
    `dvc status` finds every stage up to date. Then there is no work for Prefect's temporary server to
    start for (it is most of a no-op's time); else None, and the flow runs."""
    project = project_root(None)
    params = load_project_params(project)
    if force or params.orchestration.pull or params.orchestration.push:
        return None
    from dvc.repo import Repo, lock_repo

    # One Repo and one hold of its lock for both: DVC drops its parsed dvc.yaml and dvc.lock whenever it
    # takes the lock, so status after the graph, each taking it, parsed them twice (24 YAML loads, now 21).
    with contextlib.chdir(project), Repo(".") as repo, lock_repo(repo):
        graph = stage_graph(project, targets, repo)
        return None if stale_stages(project, graph, set(), repo) else list(graph)


def nothing_ran(stages: list[str]) -> str:
    return (
        f"synth2 pipeline: all {len(stages)} stage(s) up to date (dvc status), nothing ran; "
        "results: synth2 results, reports/pipeline.html; MLflow: make ui"
    )
