"""A study's plan: its configurations (the overrides after a preset's sizes, once per value of the sweep),
the seeds, and the DVC experiment name of every (configuration, seed); checked against params.yaml and git
before anything is queued, so a typo, a bad swept value or an uncommitted change fails in one line."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth2 import paths
from synth2.errors import Synth2Error
from synth2.presets import PRESETS

if TYPE_CHECKING:
    from synth2.study.arguments import StudyArguments

# The studies' reports; committed results, not inputs of the experiments (see _require_committed).
REPORTS = paths.REPORTS / "study"
# `--budgets 250,500` is `--sweep balance.target_size=250,500`: the synthetic captions kept by balance.
BUDGET_KEY = "balance.target_size"


class StudyError(Synth2Error):
    """A study cannot start, or one of its experiments failed."""


@dataclass
class Sweep:
    """One params key and the values a study runs it at (every value with every seed; one sweep per study)."""

    key: str
    values: list[Any]


@dataclass(frozen=True)
class Configuration:
    """One setting of the pipeline, run for every seed of the study; `value`: its value of the sweep."""

    label: str
    overrides: dict[str, Any]
    value: Any = None

    def experiment(self, study: str, seed: int) -> str:
        """The study, a hash of the overrides and the seed: a study run again finds its experiments."""
        digest = hashlib.sha1(json.dumps(self.overrides, sort_keys=True).encode()).hexdigest()[:6]
        return f"{study}-{digest}-s{seed}"


@dataclass
class Study:
    name: str
    seeds: list[int]
    configurations: list[Configuration]
    jobs: int = 2
    root: Path = field(default_factory=Path.cwd)
    sweep: Sweep | None = None
    commit: str = "unknown"  # HEAD when planned: the experiments hang off it, the report names it

    def experiments(self) -> dict[str, tuple[Configuration, int]]:
        return {c.experiment(self.name, s): (c, s) for c in self.configurations for s in self.seeds}


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plan(arguments: StudyArguments, root: Path | None = None) -> Study:
    """The study's configurations: the overrides (after the preset's sizes), once per value of the sweep.

    A configuration's experiments are named by a hash of its overrides alone, so `--budgets 500` and
    `--sweep balance.target_size=500` find the same experiments (and those of studies run before the sweep
    existed, which had the same overrides)."""
    name, seeds, overrides, sweep, preset = (
        arguments.name,
        arguments.seeds,
        arguments.overrides,
        arguments.sweep,
        arguments.preset,
    )
    if not re.fullmatch(r"[A-Za-z][\w-]*", name):
        raise StudyError(f"study name '{name}' must start with a letter and hold only letters, digits, - and _")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise StudyError(f"seeds {list(seeds)}: give distinct seeds >= 0 (a study needs at least 2 for intervals)")
    if preset is not None and preset not in PRESETS:
        raise StudyError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if arguments.jobs < 1:
        raise StudyError(f"--jobs {arguments.jobs}: need at least 1 worker")
    base = flatten(PRESETS[preset]) if preset else {}
    base |= dict(overrides or {})
    if "seed" in base or (sweep and sweep.key == "seed"):
        raise StudyError("the study sets 'seed' itself; choose seeds with --seeds")
    if sweep and sweep.key in (overrides or {}):
        raise StudyError(f"--sweep {sweep.key}: also set with -S; give its values in one place")
    root = (root or Path.cwd()).resolve()
    _validate(root, base, sweep)
    _require_committed(root)
    if sweep:  # a preset's value of the key gives way to the sweep's, as -S overrides do
        configurations = [Configuration(f"{sweep.key}={v}", base | {sweep.key: v}, v) for v in sweep.values]
    else:
        configurations = [Configuration("default" if not overrides else _label(overrides), base)]
    return Study(name, list(seeds), configurations, arguments.jobs, root, sweep, head_commit(root))


def head_commit(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


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


def _validate(root: Path, overrides: Mapping[str, Any], sweep: Sweep | None) -> None:
    """Every configuration must be valid params before anything is queued: a typo fails in one line naming
    the -S or --sweep value at fault, or params.yaml when the file itself has the mistake."""
    from synth2.params import ParamsError, parse_with_overrides, read_document

    params_file = root / "params.yaml"
    if not params_file.is_file() or not (root / "dvc.yaml").is_file():
        raise StudyError(f"{root} is not the synth2 project root (no params.yaml and dvc.yaml); run from there")
    try:
        document = read_document(params_file)
        parse_with_overrides(document, dict(overrides), params_file)
        for value in sweep.values if sweep else []:
            parse_with_overrides(document, dict(overrides) | {sweep.key: value}, params_file, origin="--sweep")
    except ParamsError as exc:  # the study's own kind of error, the same one line
        raise StudyError(str(exc)) from None
