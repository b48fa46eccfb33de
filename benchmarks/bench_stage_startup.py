"""Each stage's fixed start-up: the wall time of its command minus the body it logs, median of a few runs.

    .venv/bin/python benchmarks/bench_stage_startup.py WORKSPACE --rounds 3 [--baseline-src OLD/src] [--warm]

WORKSPACE is a checkout whose pipeline has run (e.g. the bench_pipeline copy kept with `--keep`, or a
copy with the `tiny` preset: start-up does not depend on sizes). Every stage command runs there as
dvc.yaml runs it (`python -m synth2.stages.NAME`, DVC_STAGE set, tracking on), outside DVC and Prefect,
so the figure is the stage process's own: interpreter, imports, params, tracking, teardown. Inputs and
outputs stay as they are (each stage rewrites the same bytes; `dvc status` says so afterwards).

`--baseline-src` runs each stage with that source tree too, alternating with WORKSPACE/src within every
round, so that a busy machine weighs on both alike: the before/after table of a change.

`--warm` also runs each stage as the flow does, `python -m synth2.launch NAME` forked from a warm stage
server (synth2.stage_server) started once for the benchmark, alternating with the cold command; the
server's own start (its imports, paid once per flow run) is reported apart (`warm_server_start_seconds`:
from starting it until a first stage, check_params, has run through it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (DVC stage, module and arguments): one entry per stage module and gate, one VLM variant.
STAGES = [
    ("check_params", ["check_params"]),
    ("prepare", ["prepare"]),
    ("gate_pool", ["gate", "pool"]),
    ("gate_real", ["gate", "real"]),
    ("caption_lm", ["caption_lm"]),
    ("captions", ["captions"]),
    ("gate_captions", ["gate", "captions"]),
    ("balance", ["balance"]),
    ("gate_balanced", ["gate", "balanced"]),
    ("image_encoder", ["image_encoder"]),
    ("embed_images", ["embed_images"]),
    ("prior", ["prior"]),
    ("synthesize", ["synthesize"]),
    ("gate_synthetic", ["gate", "synthetic"]),
    ("train_vlm@baseline", ["train_vlm", "baseline"]),
    ("evaluate", ["evaluate"]),
    ("report", ["report"]),
]
STAGE_DONE = re.compile(r"done in [\d.]+ s \(body (?P<body>[\d.]+) s\)")


def run_stage(
    workspace: Path, src: Path, stage: str, module: list[str], warm: dict[str, str] | None = None
) -> dict[str, float]:
    """One run of the stage's command: cold (`python -m synth2.stages.NAME`), or through dvc.yaml's
    launcher with `warm`, the environment that sends it to a stage server."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(src), DVC_STAGE=stage, **(warm or {}))
    command = ["synth2.launch", *module] if warm else [f"synth2.stages.{module[0]}", *module[1:]]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    match = STAGE_DONE.search(done.stderr + done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"stage {stage} ({src}) failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    body = float(match["body"])
    return {"wall": wall, "body": body, "startup": wall - body}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, help="also run each stage with this src/ (alternating)")
    parser.add_argument("--stages", help="comma-separated DVC stage names (default: all)")
    parser.add_argument("--warm", action="store_true", help="also run each stage forked from a stage server")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    current = args.workspace.resolve() / "src"
    sources = {"current": (current, False)}
    if args.baseline_src:
        sources = {"baseline": (args.baseline_src.resolve(), False), **sources}
    if args.warm:
        sources["current, warm"] = (current, True)
    chosen = set(args.stages.split(",")) if args.stages else None
    runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in sources}
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        warm, server_start = None, None
        if args.warm:
            sys.path.insert(0, str(current))
            from synth2.stage_server import running

            started = time.perf_counter()
            warm = stack.enter_context(running(args.workspace / ".synth2" / "stage_server.log"))
            run_stage(args.workspace, current, "check_params", ["check_params"], warm)
            server_start = round(time.perf_counter() - started, 2)
            print(f"stage server: up and through a first stage in {server_start:.2f} s", file=sys.stderr)
        for round_ in range(args.rounds):
            for stage, module in STAGES:
                if chosen and stage not in chosen:
                    continue
                order = list(sources.items())
                for name, (src, is_warm) in order if round_ % 2 == 0 else order[::-1]:
                    timing = run_stage(args.workspace, src, stage, module, warm if is_warm else None)
                    runs[name].setdefault(stage, []).append(timing)
                    print(f"round {round_} {name} {stage}: start-up {timing['startup']:.2f} s", file=sys.stderr)
    medians = {
        name: {s: {k: round(statistics.median(t[k] for t in ts), 2) for k in ts[0]} for s, ts in stages.items()}
        for name, stages in runs.items()
    }
    report = {
        "load_average_at_start": round(load, 2),
        "rounds": args.rounds,
        **({"warm_server_start_seconds": server_start} if args.warm else {}),
        "stages": medians,
        "startup_seconds": {
            name: {
                "median": statistics.median(v["startup"] for v in m.values()),
                "max": max(v["startup"] for v in m.values()),
            }
            for name, m in medians.items()
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    names = list(medians)
    print("| stage | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names), file=sys.stderr)
    for stage in medians[names[-1]]:
        print(
            f"| {stage} | " + " | ".join(f"{medians[n][stage]['startup']:.2f}" for n in names) + " |", file=sys.stderr
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
