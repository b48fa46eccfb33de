"""Scale-out on one machine, measured in one run: one command, a JSON report and a short table.

    .venv/bin/python benchmarks/bench_scale.py --size default --out reports/bench/scale.json

In one copy of the working tree (git-initialised, tracking off) it reproduces the pipeline up to
`synthesize` with the size's params, then times, stage by stage:

* `captions` and `synthesize` on Ray with 1 and with 2 workers (`compute.engine: ray`, a local Ray
  started by the stage, `compute.shards: 2` in both, so both write the same bytes, which is checked),
  and with the local engine and one shard (the default: the stage as it was). Each run reports Ray's
  start-up, the workers' start-up (process, imports, model loading) and the sharded work, as the stage
  logs them; the speed-up is the work's.
* `prior` trained on 1 and on 2 torch DDP processes (`compute.train_processes`): the training loop's
  own time (the loop logs it), the stage's wall time (torchrun, every rank's imports), and the losses.

The machine's load average is recorded before and after: on a shared machine, numbers taken under load
say more about the load than about the code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from synth2.presets import PRESETS, deep_merge

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@synth2.invalid", "-c", "commit.gpgsign=false"]
RAY_READY = re.compile(r"Ray ready in (?P<ray>[\d.]+) s")
WORKERS_READY = re.compile(
    r"(?P<n>\d+) Ray workers ready in (?P<total>[\d.]+) s \(Ray [\d.]+ s, workers and models (?P<workers>[\d.]+) s\)"
)
POOL_DONE = re.compile(r"(?P<rows>\d+) rows on (?P<where>.+?): start-up (?P<startup>[\d.]+) s, work (?P<work>[\d.]+) s")
STEP = re.compile(r"(?P<name>[\w ]+) step (?P<step>\d+)/(?P<steps>\d+) loss [\d.]+ \((?P<seconds>[\d.]+) s\)")
OUTS = {"captions": ["data/captions"], "synthesize": ["data/synthetic", "metrics/synthesize.json"]}


def copy_tree(dest: Path, overrides: dict) -> Path:
    """The working tree as git sees it (tracked + untracked, not ignored; .dvc/ included), in a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*GIT, "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_URI", "SYNTH2_"))}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        SYNTH2_TRACKING="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def set_compute(copy: Path, **compute) -> None:
    path = copy / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["compute"] |= compute
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(copy: Path, stage: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", f"synth2.stages.{stage}"],
        cwd=copy,
        env=environment() | {"PYTHONPATH": "src"},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{stage} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, result.stderr


def digest(copy: Path, relative: list[str]) -> str:
    h = hashlib.sha256()
    for rel in relative:
        path = copy / rel
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                h.update(str(file.relative_to(copy)).encode() + file.read_bytes())
    return h.hexdigest()[:16]


def sharded(copy: Path, stage: str, engine: str, workers: int, shards: int) -> dict:
    set_compute(copy, engine=engine, ray_address="", workers=workers, cpus_per_worker=1, shards=shards)
    wall, log = run_stage(copy, stage)
    done = POOL_DONE.findall(log)
    row = {
        "stage": stage,
        "engine": engine,
        "workers": workers if engine == "ray" else 0,
        "shards": shards,
        "rows": sum(int(d[0]) for d in done),
        "stage_wall_s": round(wall, 2),
        "startup_s": round(sum(float(d[2]) for d in done), 2),
        "work_s": round(sum(float(d[3]) for d in done), 2),
        "outputs": digest(copy, OUTS[stage]),
    }
    if engine == "ray":
        row["ray_start_s"] = round(sum(float(m["ray"]) for m in RAY_READY.finditer(log)), 2)
        row["workers_start_s"] = round(sum(float(m["workers"]) for m in WORKERS_READY.finditer(log)), 2)
    return row


def ddp(copy: Path, stage: str, processes: int) -> dict:
    set_compute(copy, engine="local", train_processes=processes)
    wall, log = run_stage(copy, stage)
    steps = [m for m in STEP.finditer(log) if m["step"] == m["steps"]]
    metrics = json.loads((copy / "metrics" / f"{stage}.json").read_text())
    return {
        "stage": stage,
        "train_processes": processes,
        "stage_wall_s": round(wall, 2),
        "train_loop_s": round(max(float(m["seconds"]) for m in steps), 2),
        "first_loss": metrics["first_loss"],
        "final_loss": metrics["final_loss"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(PRESETS), default="default")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "scale.json")
    parser.add_argument("--keep", action="store_true", help="keep the working copy (its path is printed)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="synth2-bench-scale-"))
    copy = copy_tree(work / "project", PRESETS[args.size])
    start = time.perf_counter()
    prepared = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "synthesize"],
        cwd=copy,
        env=environment(),
        capture_output=True,
        text=True,
    )
    if prepared.returncode != 0:
        raise SystemExit(f"dvc repro synthesize failed:\n{prepared.stdout[-2000:]}{prepared.stderr[-2000:]}")
    prepare_s = time.perf_counter() - start

    sharding = []
    for stage in ("captions", "synthesize"):
        sharding.append(sharded(copy, stage, "local", 1, 1))
        sharding += [sharded(copy, stage, "ray", workers, 2) for workers in (1, 2)]
    training = [ddp(copy, "prior", processes) for processes in (1, 2)]
    set_compute(copy, engine="local", workers=2, shards=1, train_processes=1)

    speedups = {}
    for stage in ("captions", "synthesize"):
        one, two = (r for r in sharding if r["stage"] == stage and r["engine"] == "ray")
        assert one["outputs"] == two["outputs"], f"{stage}: 1 and 2 workers wrote different outputs"
        speedups[stage] = round(one["work_s"] / two["work_s"], 2)
    speedups["prior_ddp"] = round(training[0]["train_loop_s"] / training[1]["train_loop_s"], 2)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "size": args.size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "prepare_up_to_synthesize_s": round(prepare_s, 1),
        "sharded": sharding,
        "ddp": training,
        "speedup_2_over_1": speedups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")
    print(f"{'stage':<11} {'engine':<6} {'workers':>7} {'shards':>6} {'Ray':>6} {'workers':>8} {'work':>7} {'wall':>7}")
    for r in sharding:
        ray, workers = r.get("ray_start_s", 0.0), r.get("workers_start_s", r["startup_s"])
        print(
            f"{r['stage']:<11} {r['engine']:<6} {r['workers']:>7} {r['shards']:>6} {ray:>6.1f} {workers:>8.1f} "
            f"{r['work_s']:>7.1f} {r['stage_wall_s']:>7.1f}"
        )
    for r in training:
        print(f"prior DDP x{r['train_processes']}: loop {r['train_loop_s']:.1f} s, stage {r['stage_wall_s']:.1f} s")
    print(f"speed-up, 2 over 1 (work; DDP: training loop): {speedups}")
    print(f"report: {args.out}")
    if args.keep:
        print(f"working copy: {copy}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
