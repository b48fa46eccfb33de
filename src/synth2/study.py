"""`synth2 study`: Synth²'s claims over several seeds, each seed a DVC experiment, with intervals.

    synth2 study                                      # 5 seeds of the pipeline as params.yaml says
    synth2 study --seeds 3 -S train_vlm.synthetic.source_tags=true --name tags
    synth2 study --budgets 250,500,1000,3000          # balanced vs unbalanced at several budgets

Each (configuration, seed) is one DVC experiment, `dvc exp run --queue -S seed=N -S ...`, named by the
study, a hash of its overrides and the seed, so a study that is run again finds the experiments it
already has (on this commit) and queues only the rest; `dvc queue start --jobs J` runs them, each in its
own copy of the workspace, and DVC's run-cache restores every stage an earlier experiment already ran
with the same code, data and params (the upstream stages of a budget sweep run once per seed).

The study then aggregates, per configuration, variant, split (val, test), subset (overall, seen,
unseen) and metric: mean, standard deviation and a 95% t-interval over seeds; and paired differences
(synth - baseline; balanced - unbalanced, i.e. synth - synth_unbalanced) with a 95% t-interval over
seeds and a 95% hierarchical bootstrap interval (seeds, then images within each seed; for the metrics
that are means over images: CIDEr and attribute accuracy, from reports/evaluate/per_image.parquet).
It writes reports/study/NAME.json, NAME.md and NAME.png, logs one MLflow parent run with a child per
experiment, and prints the table. Tuning happens on `val`; claims come from `test`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synth2 import paths
from synth2.errors import Synth2Error
from synth2.io import atomic_path, write_json
from synth2.presets import PRESETS

log = logging.getLogger("synth2")

VARIANTS = paths.VLM_VARIANTS
SPLITS = ("val", "test")
SUBSETS = ("overall", "seen", "unseen")
# (name, variant, minus variant): synthetic pairs against none, balanced against unbalanced selection.
DIFFERENCES = (("synth - baseline", "synth", "baseline"), ("balanced - unbalanced", "synth", "synth_unbalanced"))
BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
REPORTS = paths.REPORTS / "study"
POLL_SECONDS = 5.0


class StudyError(Synth2Error):
    """A study cannot start, or one of its experiments failed."""


@dataclass(frozen=True)
class Configuration:
    """One setting of the pipeline, run for every seed of the study."""

    label: str
    overrides: dict[str, Any]

    def experiment(self, study: str, seed: int) -> str:
        digest = hashlib.sha1(json.dumps(self.overrides, sort_keys=True).encode()).hexdigest()[:6]
        return f"{study}-{digest}-s{seed}"


@dataclass
class Study:
    name: str
    seeds: list[int]
    configurations: list[Configuration]
    jobs: int = 2
    root: Path = field(default_factory=Path.cwd)

    def experiments(self) -> dict[str, tuple[Configuration, int]]:
        return {c.experiment(self.name, s): (c, s) for c in self.configurations for s in self.seeds}


# ------------------------------------------------------------------------------------------- planning


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plan(
    name: str,
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    budgets: Sequence[int] | None = None,
    preset: str | None = None,
    jobs: int = 2,
    root: Path | None = None,
) -> Study:
    """The study's configurations: the overrides (after the preset's sizes), once per budget if given."""
    if not re.fullmatch(r"[A-Za-z][\w-]*", name):
        raise StudyError(f"study name '{name}' must start with a letter and hold only letters, digits, - and _")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise StudyError(f"seeds {list(seeds)}: give distinct seeds >= 0 (a study needs at least 2 for intervals)")
    if preset is not None and preset not in PRESETS:
        raise StudyError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if jobs < 1:
        raise StudyError(f"--jobs {jobs}: need at least 1 worker")
    base = flatten(PRESETS[preset]) if preset else {}
    base |= dict(overrides or {})
    if "seed" in base:
        raise StudyError("the study sets 'seed' itself; choose seeds with --seeds")
    root = (root or Path.cwd()).resolve()
    _validate(root, base, budgets)
    _require_committed(root)
    if budgets:
        configurations = [Configuration(f"target_size={b}", base | {"balance.target_size": b}) for b in budgets]
    else:
        configurations = [Configuration("default" if not overrides else _label(overrides), base)]
    return Study(name, list(seeds), configurations, jobs, root)


def _label(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def _require_committed(root: Path) -> None:
    """Experiments hang off a commit and the report names it: it must be what runs."""
    from synth2.tracking.lineage import git_state, pipeline_outs

    # The studies' own reports (committed under reports/study/) are results, not inputs of the experiments.
    commit, dirty = git_state(root, pipeline_outs(root) | {str(REPORTS)})
    if commit == "unknown":
        raise StudyError(f"{root} is not a git repository with a commit; a study's experiments hang off a commit")
    if dirty:
        raise StudyError(
            "the workspace has uncommitted changes (git status): commit them first, so the study's "
            "experiments and report match a commit"
        )


def _validate(root: Path, overrides: Mapping[str, Any], budgets: Sequence[int] | None) -> None:
    """Every configuration must be valid params before anything is queued: a typo fails in one line."""
    import yaml

    from synth2.params import parse_params

    params_file = root / "params.yaml"
    if not params_file.is_file() or not (root / "dvc.yaml").is_file():
        raise StudyError(f"{root} is not the synth2 project root (no params.yaml and dvc.yaml); run from there")
    raw = yaml.safe_load(params_file.read_text())
    for budget in budgets or [None]:
        merged = dict(overrides) | ({"balance.target_size": budget} if budget else {})
        document = json.loads(json.dumps(raw))
        for dotted, value in merged.items():
            node = document
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise StudyError(f"override '{dotted}': params.yaml has no section '{part}'")
                node = node[part]
            if leaf not in node:
                raise StudyError(f"override '{dotted}': params.yaml has no such key; check its spelling")
            node[leaf] = value
        parse_params(document, params_file)


# ------------------------------------------------------------------------------------ DVC experiments


def _dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The stages run `python -m synth2...`: make that this interpreter's environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Output goes through files, not pipes: `dvc queue start` leaves workers running that inherit its stdout and
    # stderr, and reading pipes would wait for those workers to end, i.e. for the whole queue.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        command = [sys.executable, "-m", "dvc", *args]
        code = subprocess.run(command, cwd=root, env=env, stdout=out, stderr=err).returncode
        out.seek(0), err.seek(0)
        result = subprocess.CompletedProcess(args, code, out.read(), err.read())
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise StudyError(f"dvc {' '.join(args[:3])} failed: {detail[-1] if detail else result.returncode}")
    return result


def finished_experiments(root: Path, baseline: str) -> set[str]:
    """Names of the DVC experiments of commit `baseline` (experiments DVC kept are successful ones)."""
    return set(_dvc(root, "exp", "list", "--rev", baseline, "--name-only").stdout.split())


def queue_status(root: Path) -> tuple[dict[str, str], int]:
    """({experiment name: Queued | Running | Success | Failed}, live workers) from `dvc queue status`."""
    statuses, workers = {}, 0
    for line in _dvc(root, "queue", "status").stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[-1] in {"Queued", "Running", "Success", "Failed"}:
            statuses[fields[1]] = fields[-1]
        found = re.search(r"Worker status: (\d+) active, (\d+) idle", line)
        if found:
            workers = int(found.group(1)) + int(found.group(2))
    return statuses, workers


def run_experiments(study: Study) -> None:
    """Queue the experiments the study lacks, run them with `study.jobs` workers and wait for them."""
    root, wanted = study.root, study.experiments()
    baseline = _commit(root)  # experiments hang off the commit they were queued on, whatever HEAD is later
    done = finished_experiments(root, baseline) & set(wanted)
    todo = [name for name in wanted if name not in done]
    log.info("study %s: %d experiments, %d already done, %d to run", study.name, len(wanted), len(done), len(todo))
    if not todo:
        return
    stale = [n for n in todo if n in queue_status(root)[0]]
    if stale:  # queued or failed by an earlier, interrupted attempt: a new attempt needs the name back
        _dvc(root, "queue", "remove", *stale)
    for name in todo:
        configuration, seed = wanted[name]
        sets = [a for k, v in {"seed": seed, **configuration.overrides}.items() for a in ("-S", f"{k}={json.dumps(v)}")]
        _dvc(root, "exp", "run", "--queue", "--name", name, *sets)
    started, reported = time.monotonic(), -1
    while True:
        status, workers = queue_status(root)
        finished = (finished_experiments(root, baseline) & set(todo)) | {n for n in todo if status.get(n) == "Success"}
        failed = sorted(n for n in todo if status.get(n) == "Failed")
        pending = [n for n in todo if n not in finished and n not in failed]
        if len(finished) + len(failed) != reported:
            reported = len(finished) + len(failed)
            elapsed = time.monotonic() - started
            log.info("study %s: %d/%d experiments finished (%.0f s)", study.name, reported, len(todo), elapsed)
        if not pending:
            break
        lost = [n for n in pending if n not in status]
        if lost:
            raise StudyError(f"experiments {lost} are neither queued, running nor finished; run the study again")
        if workers == 0:  # none started yet, or they stopped (e.g. killed): start them, it is idempotent
            _dvc(root, "queue", "start", "--jobs", str(study.jobs))
        time.sleep(POLL_SECONDS)
    if failed:
        raise StudyError(
            f"{len(failed)} of {len(todo)} experiments failed ({', '.join(failed)}); see `dvc queue logs {failed[0]}`, "
            "fix the cause and run the study again (finished experiments are kept)"
        )


def read_results(root: Path, name: str) -> tuple[dict, pd.DataFrame]:
    """(metrics/evaluate.json, reports/evaluate/per_image.parquet) of one experiment."""
    import dvc.api

    try:
        metrics = json.loads(dvc.api.read(str(paths.EVAL_METRICS), repo=str(root), rev=name))
        per_image = pd.read_parquet(
            io.BytesIO(dvc.api.read(str(paths.EVAL_PER_IMAGE), repo=str(root), rev=name, mode="rb"))
        )
    except Exception as exc:  # DVC raises several types for a missing revision or file
        raise StudyError(f"experiment {name}: cannot read its evaluation ({type(exc).__name__}: {exc})") from None
    return metrics, per_image


# ---------------------------------------------------------------------------------------- statistics


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-interval of the mean (NaN bounds with fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def summarise(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    low, high = t_interval(values)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": float(np.mean(values)), "std": std, "ci95": [low, high], "n": len(values), "values": values}


def hierarchical_bootstrap(
    per_seed: Sequence[tuple[np.ndarray, np.ndarray]], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) over seeds, resampling seeds, then images within each seed.

    `per_seed[i]` holds the per-image values (a, b) of seed i, paired by image.
    """
    rng = np.random.default_rng(seed)
    differences = [a - b for a, b in per_seed]
    estimates = np.empty(samples)
    for k in range(samples):
        chosen = rng.integers(len(differences), size=len(differences))
        estimates[k] = np.mean(
            [differences[i][rng.integers(len(differences[i]), size=len(differences[i]))].mean() for i in chosen]
        )
    low, high = np.quantile(estimates, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def _resampled_mean(values: np.ndarray, rng: np.random.Generator) -> float:
    return float(values[rng.integers(len(values), size=len(values))].mean())


def aggregate(results: Mapping[int, tuple[dict, pd.DataFrame]]) -> dict[str, Any]:
    """Per variant/split/subset/metric summaries and the paired differences, over the seeds of `results`."""
    seeds = sorted(results)
    summary: dict[str, Any] = {}
    for split in SPLITS:
        for variant in VARIANTS:
            for subset in SUBSETS:
                metrics = sorted({m for s in seeds for m in results[s][0][split][variant].get(subset, {})})
                for metric in metrics:
                    values = [results[s][0][split][variant][subset][metric] for s in seeds]
                    summary.setdefault(split, {}).setdefault(variant, {}).setdefault(subset, {})[metric] = summarise(
                        values
                    )
    differences: dict[str, Any] = {}
    for label, a, b in DIFFERENCES:
        for split in SPLITS:
            for subset in SUBSETS:
                for metric in summary[split][a].get(subset, {}):
                    diffs = [
                        results[s][0][split][a][subset][metric] - results[s][0][split][b][subset][metric] for s in seeds
                    ]
                    base = summary[split][b][subset][metric]["mean"]
                    entry = summarise(diffs) | {"relative_to_minus": float(np.mean(diffs)) / base if base else None}
                    pairs = _paired_images(results, seeds, split, subset, metric, a, b)
                    if pairs:
                        entry["bootstrap_ci95"] = list(hierarchical_bootstrap(pairs))
                    differences.setdefault(label, {}).setdefault(split, {}).setdefault(subset, {})[metric] = entry
    return {"seeds": seeds, "summary": summary, "differences": differences}


def _paired_images(results, seeds, split, subset, metric, a, b) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-image values of variants a and b, paired by image, for every seed (empty: not a per-image metric)."""
    pairs = []
    for s in seeds:
        frame = results[s][1]
        if metric not in frame:
            return []
        rows = frame[(frame["split"] == split) & (frame["subset"] == subset)]
        wide = rows.pivot_table(index="image_id", columns="variant", values=metric)
        pairs.append((wide[a].to_numpy(), wide[b].to_numpy()))
    return pairs


# -------------------------------------------------------------------------------------------- reports


HEADLINE = (
    ("attr_colour_shape", "colour+shape"),
    ("attr_all", "all attributes"),
    ("cider", "CIDEr"),
    ("bleu4", "BLEU-4"),
)


def _cell(entry: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not entry:
        return "n/a"
    low, high = entry["ci95"]
    return f"{entry['mean']:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _difference_cells(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci95"]
    boot = entry.get("bootstrap_ci95")
    relative = entry["relative_to_minus"]
    return " | ".join(
        [
            f"{entry['mean']:+.3f}",
            f"[{low:+.3f}, {high:+.3f}]",
            f"[{boot[0]:+.3f}, {boot[1]:+.3f}]" if boot else "n/a",
            f"{relative:+.1%}" if relative is not None else "n/a",
        ]
    )


def markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Study `{report['name']}`",
        "",
        f"Seeds {', '.join(map(str, report['seeds']))}; commit `{report['commit'][:10]}`; "
        f"{report['wall_seconds'] / 60:.1f} min. Cells: mean ± half-width of the 95% t-interval over seeds.",
        "",
    ]
    for configuration in report["configurations"]:
        summary, differences = configuration["summary"], configuration["differences"]
        metrics = [(k, h) for k, h in HEADLINE if k in summary["test"]["baseline"]["overall"]]
        lines += [f"## {configuration['label']}", "", f"Overrides: `{json.dumps(configuration['overrides'])}`", ""]
        for split in ("test", "val"):
            lines += [f"**{split}**", "", "| variant | subset | " + " | ".join(h for _, h in metrics) + " |"]
            lines.append("|---|---|" + "---:|" * len(metrics))
            for variant in VARIANTS:
                for subset in SUBSETS:
                    values = summary[split][variant].get(subset)
                    if values:
                        cells = " | ".join(_cell(values.get(k)) for k, _ in metrics)
                        lines.append(f"| {variant} | {subset} | {cells} |")
            lines.append("")
        lines += [
            "**Paired differences (test)**: mean, 95% t-interval over seeds, 95% bootstrap interval over seeds "
            "and images; relative: the mean difference over the second variant's mean.",
            "",
            "| difference | subset | metric | mean | t-interval | bootstrap | relative |",
            "|---|---|---|---:|---|---|---:|",
        ]
        for label in differences:
            for subset in SUBSETS:
                for key, heading in metrics:
                    entry = differences[label]["test"].get(subset, {}).get(key)
                    if entry:
                        lines.append(f"| {label} | {subset} | {heading} | " + _difference_cells(entry) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Per-seed points and the mean with its interval, per variant, for the headline test metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("overall", "cider", "CIDEr, overall"), ("unseen", "attr_colour_shape", "colour+shape, unseen")]
    configurations = report["configurations"]
    fig, axes = plt.subplots(
        len(configurations), len(panels), figsize=(5 * len(panels), 3.2 * len(configurations)), squeeze=False
    )
    for row, configuration in enumerate(configurations):
        summary = configuration["summary"]["test"]
        for col, (subset, metric, title) in enumerate(panels):
            ax = axes[row][col]
            for x, variant in enumerate(VARIANTS):
                entry = summary[variant].get(subset, {}).get(metric)
                if not entry:
                    continue
                ax.scatter([x] * len(entry["values"]), entry["values"], color="grey", s=14, zorder=2)
                low, high = entry["ci95"]
                error = [[entry["mean"] - low], [high - entry["mean"]]]
                ax.errorbar(x, entry["mean"], yerr=error, fmt="o", color="C0", capsize=6, zorder=3)
            ax.set_xticks(range(len(VARIANTS)), VARIANTS)
            ax.set_title(f"{configuration['label']}: {title} (test)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _commit(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def collect(study: Study, wall_seconds: float) -> dict[str, Any]:
    """Aggregate every configuration's experiments into the study report (JSON-ready)."""
    configurations = []
    for configuration in study.configurations:
        names = {seed: configuration.experiment(study.name, seed) for seed in study.seeds}
        results = {seed: read_results(study.root, name) for seed, name in names.items()}
        configurations.append(
            {"label": configuration.label, "overrides": configuration.overrides, "experiments": names}
            | aggregate(results)
        )
    return {
        "name": study.name,
        "seeds": study.seeds,
        "commit": _commit(study.root),
        "wall_seconds": wall_seconds,
        "configurations": configurations,
    }


def write_reports(report: Mapping[str, Any], root: Path) -> dict[str, Path]:
    directory = root / REPORTS
    outputs = {suffix: directory / f"{report['name']}.{suffix}" for suffix in ("json", "md", "png")}
    write_json(report, outputs["json"])
    with atomic_path(outputs["md"]) as tmp:
        tmp.write_text(markdown(report) + "\n")
    plot(report, outputs["png"])
    return outputs


def log_to_mlflow(report: Mapping[str, Any], outputs: Mapping[str, Path], root: Path) -> str | None:
    """One parent run for the study, a child run per experiment with its metrics; None when tracking is off."""
    from synth2 import tracking

    if not tracking.enabled():
        return None
    try:
        from mlflow.entities import Metric, Param

        from synth2.params import load_params
        from synth2.tracking.sync import Session

        settings = load_params(root / "params.yaml").tracking
        uri = tracking.resolve_tracking_uri(settings.tracking_uri, root)
        session = Session()
        experiment_id, client = session.experiment(uri, settings.experiment, root), session.client(uri)
        now = int(time.time() * 1000)

        def metrics(values: Mapping[str, Any]) -> list[Metric]:
            return [Metric(k, v, now, 0) for k, v in tracking.numeric_metrics(values).items()]

        tags = {tracking.TAG_EXECUTION: "synth2 study", tracking.TAG_COMMIT: report["commit"]}
        tags["synth2.study"] = report["name"]
        parent = client.create_run(experiment_id, run_name=f"study {report['name']}", tags=tags).info.run_id
        client.log_batch(parent, params=[Param("seeds", json.dumps(report["seeds"]))])
        for configuration in report["configurations"]:
            for index, (seed, name) in enumerate(sorted(configuration["experiments"].items())):
                child_tags = tags | {
                    "mlflow.parentRunId": parent,
                    tracking.TAG_EXP_NAME: name,
                    "synth2.seed": str(seed),
                }
                child = client.create_run(experiment_id, run_name=name, tags=child_tags).info.run_id
                params = [Param(k, str(v)) for k, v in {"seed": seed, **configuration["overrides"]}.items()]
                per_seed = _seed_values(configuration["summary"], index)
                client.log_batch(child, metrics=metrics(per_seed), params=params)
                client.set_terminated(child, "FINISHED")
            means = {
                f"{configuration['label']}.{label}.test.{subset}.{metric}": entry["mean"]
                for label, splits in configuration["differences"].items()
                for subset, entries in splits["test"].items()
                for metric, entry in entries.items()
            }
            client.log_batch(parent, metrics=metrics(means))
        for path in outputs.values():
            client.log_artifact(parent, str(path), "study")
        client.set_terminated(parent, "FINISHED")
        return parent
    except Exception as exc:  # tracking never fails the study: the reports are written already
        log.warning("mlflow: the study was not logged (%s: %s)", type(exc).__name__, exc)
        return None


def _seed_values(summary: Mapping[str, Any], index: int) -> dict[str, float]:
    """The metrics of the index-th seed (seeds sorted) out of a configuration's summary."""
    return {
        f"{split}.{variant}.{subset}.{metric}": entry["values"][index]
        for split, variants in summary.items()
        for variant, subsets in variants.items()
        for subset, entries in subsets.items()
        for metric, entry in entries.items()
    }


def run_study(study: Study) -> dict[str, Any]:
    """Run (or resume) the study's experiments, aggregate them, write and log the reports."""
    started = time.perf_counter()
    run_experiments(study)
    report = collect(study, time.perf_counter() - started)
    outputs = write_reports(report, study.root)
    report["mlflow_run_id"] = log_to_mlflow(report, outputs, study.root)
    report["outputs"] = {k: str(v) for k, v in outputs.items()}
    return report
