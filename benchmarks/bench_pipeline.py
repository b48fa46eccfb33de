"""The pipeline's speed, measured in one run on one machine: one command, a JSON report and a short table.

    .venv/bin/python benchmarks/bench_pipeline.py --size default --out reports/bench/pipeline.json

Each mode runs from a clean state in its own copy of the working tree (git-initialised, no DVC cache, no
outputs, its own MLflow store and PREFECT_HOME), so neither DVC's cache nor its run-cache skips work:

* `flow_parallel`: `python -m flows.pipeline` (the flow `make run` runs), independent stages at once;
* `flow_serial`: the same with `--max-parallel 1`;
* `dvc_repro`, `dvc_repro_untracked`: a bare `dvc repro`, with MLflow tracking on and off;
* `make_run_noop`: `python -m flows.run` (what `make run` runs) again on the up-to-date parallel copy, the
  median of 5, against `dvc_status_noop`, the median of 5 `dvc status` on the same copy.

It also reports, from the serial flow's log, each stage's wall time, its own work (the stage body, which
the stage frame logs) and the fixed overhead (the rest: interpreter start, imports of the stage module,
params, tracking, DVC); whether the serial and parallel runs wrote the same dvc.lock; and the caption LM's
throughput with batched generation against one prompt at a time (same model, same settings).
"""

from __future__ import annotations

import argparse
import json
import os
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
STAGE_DONE = re.compile(r"\| \S+ (?P<stage>\S+) done in (?P<total>[\d.]+) s \(body (?P<body>[\d.]+) s\)")
STAGE_RAN = re.compile(r"(?P<stage>\S+): ran in (?P<wall>[\d.]+) s")


def copy_tree(dest: Path, overrides: dict) -> Path:
    """The working tree as git sees it (tracked + untracked, not ignored), committed in a fresh repo."""
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
        PYTHONPATH=str(ROOT),  # the flows and tasks packages; the stages run the copy's src (dvc.yaml)
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


def per_stage(log_text: str) -> dict[str, dict[str, float]]:
    """{stage: wall (task), body (the stage's own work), overhead (the rest)} from a flow's log."""
    bodies = {m["stage"]: float(m["body"]) for m in STAGE_DONE.finditer(log_text)}
    stages = {}
    for match in STAGE_RAN.finditer(log_text):
        stage, wall = match["stage"], float(match["wall"])
        if stage in bodies:
            stages[stage] = {"wall": wall, "body": bodies[stage], "overhead": round(wall - bodies[stage], 2)}
    return stages


def locked_outs(copy: Path) -> dict[str, str]:
    lock = yaml.safe_load((copy / "dvc.lock").read_text())["stages"]
    return {out["path"]: out.get("md5", "") for stage in lock.values() for out in stage.get("outs", [])}


def caption_throughput(copy: Path, prompts: int = 256, batch_size: int = 256) -> dict[str, float]:
    """Captions per second of the trained caption LM: batched against one prompt at a time."""
    sys.path.insert(0, str(copy / "src"))
    from synth2.models.caption_lm import generate_captions, load_caption_lm

    model, tokenizer = load_caption_lm(copy / "models" / "caption_lm")
    texts = ["concepts: red star caption:"] * prompts
    started = time.perf_counter()
    generate_captions(model, tokenizer, texts, batch_size=batch_size, seed=0)
    batched = prompts / (time.perf_counter() - started)
    single_n = max(8, prompts // 8)
    started = time.perf_counter()
    for text in texts[:single_n]:
        generate_captions(model, tokenizer, [text], batch_size=1, seed=0)
    single = single_n / (time.perf_counter() - started)
    return {
        "batched_captions_per_s": round(batched, 1),
        "one_at_a_time_captions_per_s": round(single, 1),
        "speedup": round(batched / single, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(PRESETS), default="default")
    parser.add_argument("--workdir", type=Path, help="where the copies go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the copies")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # as the stages
    workdir = Path(tempfile.mkdtemp(prefix="synth2-bench-", dir=args.workdir))
    log_dir = workdir / "logs"
    log_dir.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    flow = [sys.executable, "-m", "flows.pipeline"]
    modes = {
        "flow_parallel": (flow, {}),
        "flow_serial": ([*flow, "--max-parallel", "1"], {}),
        "dvc_repro": ([*dvc, "repro"], {}),
        "dvc_repro_untracked": ([*dvc, "repro"], {"SYNTH2_TRACKING": "0"}),
    }
    seconds: dict[str, float] = {}
    copies: dict[str, Path] = {}
    load = os.getloadavg()[0]
    try:
        for mode, (cmd, extra) in modes.items():
            copies[mode] = copy_tree(workdir / mode, PRESETS[args.size])
            # The copy carries the project's .dvc/config (analytics off) but no cache: a DVC project already.
            seconds[mode] = timed(cmd, copies[mode], environment(copies[mode], **extra), log_dir / f"{mode}.log")
            print(f"{mode}: {seconds[mode]} s", file=sys.stderr)
        parallel = copies["flow_parallel"]
        for mode, cmd in (
            ("make_run_noop", [sys.executable, "-m", "flows.run"]),
            ("dvc_status_noop", [*dvc, "status"]),
        ):
            runs = [timed(cmd, parallel, environment(parallel), log_dir / f"{mode}.log") for _ in range(5)]
            seconds[mode] = sorted(runs)[len(runs) // 2]
        stages = per_stage((log_dir / "flow_serial.log").read_text())
        same = locked_outs(copies["flow_serial"]) == locked_outs(parallel)
        captions = caption_throughput(parallel)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    overheads = [s["overhead"] for s in stages.values()]
    report = {
        "size": args.size,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(load, 2),
        "seconds": seconds,
        "parallel_over_serial": round(seconds["flow_parallel"] / seconds["flow_serial"], 3),
        "parallel_over_dvc_repro": round(seconds["flow_parallel"] / seconds["dvc_repro"], 3),
        "noop_over_dvc_status": round(seconds["make_run_noop"] / seconds["dvc_status_noop"], 3),
        "tracking_on_over_off": round(seconds["dvc_repro"] / seconds["dvc_repro_untracked"], 3),
        "serial_and_parallel_outputs_identical": same,
        "stages": stages,
        "stage_overhead_seconds": {"median": sorted(overheads)[len(overheads) // 2], "max": max(overheads)},
        "caption_generation": captions,
    }
    text = json.dumps(report, indent=2)
    print(text)
    print(table(report), file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def table(report: dict) -> str:
    lines = ["| mode | seconds |", "|---|---:|"]
    lines += [f"| {mode} | {s:.1f} |" for mode, s in report["seconds"].items()]
    lines += ["", "| stage | wall | body | overhead |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['wall']:.1f} | {v['body']:.1f} | {v['overhead']:.1f} |" for k, v in report["stages"].items()]
    captions = report["caption_generation"]
    lines += [
        "",
        f"caption generation: {captions['batched_captions_per_s']} captions/s batched vs "
        f"{captions['one_at_a_time_captions_per_s']} one at a time ({captions['speedup']}x)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
