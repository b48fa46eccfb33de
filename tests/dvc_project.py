"""A throwaway two-stage DVC project (git + dvc init) whose stages run in synth2's stage frame.

It exercises the orchestration and tracking machinery without model code: `make_numbers` writes data,
a metric and a loss curve; `sum_numbers` reads them, writes a tiny model directory, logs it and makes
it the champion. The stages call synth2.stage.run_stage, so MLflow tracking runs exactly as in the
real stages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import repository_params

MAKE_NUMBERS = """
import json, os
from synth2.io import write_json
from synth2.stage import stage_main
from synth2 import tracking

def run(params):
    numbers = [params.seed + i for i in range(5)]
    write_json(numbers, "data/numbers.json")
    write_json({"count": len(numbers), "nested": {"mean": sum(numbers) / len(numbers)}}, "metrics/numbers.json")
    os.makedirs("plots", exist_ok=True)
    with open("plots/curve.csv", "w") as f:
        f.write("step,loss\\n" + "".join(f"{s},{1.0 / (s + 1)}\\n" for s in range(0, 50, 10)))

stage_main("make_numbers", run)()
"""

SUM_NUMBERS = """
import json
from pathlib import Path
from synth2.io import write_json, atomic_path
from synth2.stage import stage_main
from synth2 import tracking

def run(params):
    numbers = json.loads(Path("data/numbers.json").read_text())
    write_json({"total": sum(numbers)}, "metrics/total.json")
    with atomic_path("models/tiny") as tmp:
        tmp.mkdir()
        (tmp / "weights.txt").write_text(str(sum(numbers)))
    tracking.log_model("models/tiny", "tiny")
    tracking.promote_best(
        {"tiny": "models/tiny"}, {"tiny": dict(enumerate(numbers))}, "total", params.tracking.registered_model,
        "data/numbers.json",
    )

stage_main("sum_numbers", run)()
"""

DVC_YAML = {
    "stages": {
        "make_numbers": {
            "cmd": "python stages/make_numbers.py",
            "deps": ["stages/make_numbers.py"],
            "params": ["seed"],
            "outs": ["data/numbers.json"],
            "metrics": [{"metrics/numbers.json": {"cache": False}}],
            "plots": [{"plots/curve.csv": {"cache": False, "x": "step", "y": "loss"}}],
        },
        "sum_numbers": {
            "cmd": "python stages/sum_numbers.py",
            "deps": ["stages/sum_numbers.py", "data/numbers.json"],
            "params": ["tracking.champion_metric"],
            "outs": ["models/tiny"],
            "metrics": [{"metrics/total.json": {"cache": False}}],
        },
    }
}

GIT = ["git", "-c", "user.name=synth2 tests", "-c", "user.email=tests@synth2.invalid", "-c", "commit.gpgsign=false"]


def dvc(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, check=True, capture_output=True, text=True
    )


def make_project(root: Path, params: dict | None = None) -> Path:
    """Create the project in `root` (git repo with one commit, DVC initialised, analytics off)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "stages").mkdir(exist_ok=True)
    (root / "stages" / "make_numbers.py").write_text(MAKE_NUMBERS)
    (root / "stages" / "sum_numbers.py").write_text(SUM_NUMBERS)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    # The whole params.yaml of the repository: the stage frame validates every key before a stage runs.
    overrides = params or {"seed": 1, "tracking": {"champion_metric": "total"}}
    (root / "params.yaml").write_text(yaml.safe_dump(repository_params(overrides), sort_keys=False))
    (root / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "tiny pipeline"], cwd=root, check=True)
    return root


def project_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1", SYNTH2_TRACKING_STRICT="1")
    env.update(extra)
    return env
