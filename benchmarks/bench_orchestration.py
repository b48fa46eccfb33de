"""Orchestration overhead: the Prefect flow (`make run`) against a bare `dvc repro`, same pipeline.

    .venv/bin/python benchmarks/bench_orchestration.py --size tiny [--out bench.json]

Each mode runs from a clean state in its own copy of the working tree (git-initialised, no DVC cache,
no outputs, its own MLflow store and PREFECT_HOME), so neither DVC's cache nor its run-cache can
skip work for a later mode:

* `dvc_repro_untracked`: `dvc repro` with SYNTH2_TRACKING=0 (the stages without MLflow);
* `dvc_repro`: `dvc repro` (the stages write MLflow themselves, as always);
* `flow`: `python -m flows.pipeline` (ephemeral Prefect, one task per stage, parent MLflow run).

Then a no-op rerun of `dvc repro` and of the flow in the last copies. Prints one JSON object: seconds
per mode and the ratios flow / dvc_repro (the acceptance bound is 1.3) and flow / dvc_repro_untracked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from synth2.presets import PRESETS, deep_merge

ROOT = Path(__file__).resolve().parents[1]
SIZES = PRESETS
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@synth2.invalid", "-c", "commit.gpgsign=false"]


def copy_tree(dest: Path, overrides: dict) -> Path:
    """The working tree as git sees it (tracked + untracked, not ignored), committed in a fresh repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides), sort_keys=False))
    for stale in ("dvc.lock", "metrics", "plots"):
        path = dest / stale
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-qm", "benchmark copy"], cwd=dest, check=True)
    return dest


def environment(copy: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "SYNTH2_"))
    }
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PREFECT_HOME=str(copy / ".prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        MLFLOW_DISABLE_TELEMETRY="true",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        GX_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(copy / "src"),  # the copy's code, not the editable install's
    )
    env.update(extra)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {result.returncode}); see {log}")
    return round(seconds, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--workdir", type=Path, help="where the copies go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the copies")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="synth2-bench-", dir=args.workdir))
    log = workdir / "bench.log"
    dvc = [sys.executable, "-m", "dvc"]
    flow = [sys.executable, "-m", "flows.pipeline"]
    modes = {
        "dvc_repro_untracked": (dvc + ["repro"], {"SYNTH2_TRACKING": "0"}),
        "dvc_repro": (dvc + ["repro"], {}),
        "flow": (flow, {}),
    }
    seconds: dict[str, float] = {}
    copies: dict[str, Path] = {}
    try:
        for mode, (cmd, extra) in modes.items():
            copies[mode] = copy_tree(workdir / mode, SIZES[args.size])
            seconds[mode] = timed(cmd, copies[mode], environment(copies[mode], **extra), log)
            print(f"{mode}: {seconds[mode]} s", file=sys.stderr)
        seconds["dvc_repro_noop"] = timed(dvc + ["repro"], copies["dvc_repro"], environment(copies["dvc_repro"]), log)
        seconds["flow_noop"] = timed(flow, copies["flow"], environment(copies["flow"]), log)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "size": args.size,
        "cpus": os.cpu_count(),
        "seconds": seconds,
        "ratio_flow_vs_dvc_repro": round(seconds["flow"] / seconds["dvc_repro"], 3),
        "ratio_flow_vs_dvc_repro_untracked": round(seconds["flow"] / seconds["dvc_repro_untracked"], 3),
        "ratio_tracking_overhead": round(seconds["dvc_repro"] / seconds["dvc_repro_untracked"], 3),
        "bound": 1.3,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
