"""The `synth2` command line.

synth2 world show --n 16 OUT.png    contact sheet of freshly sampled scenes with their captions
synth2 results                      Markdown table of the evaluated variants (after `make run`)
synth2 tracking sync                send the tracking spool to MLflow now, a line per store
synth2 tracking relink              point the MLflow store at its artifacts after the checkout moved
"""

from __future__ import annotations

import argparse

import numpy as np

from synth2.errors import Synth2Error, terminate_as_interrupt, user_errors
from synth2.study.arguments import add_arguments as add_study_arguments
from synth2.tracking.sync import add_arguments as add_sync_arguments


def world_show(n: int, out: str, seed: int, style: str, image_size: int) -> None:
    from synth2.contact_sheet import contact_sheet
    from synth2.world.grammar import caption
    from synth2.world.scenes import COLOURS, SHAPES, render, sample_scene

    rng = np.random.default_rng(seed)
    scenes = [
        sample_scene(rng, COLOURS[rng.integers(len(COLOURS))], SHAPES[rng.integers(len(SHAPES))], 0.3) for _ in range(n)
    ]
    images = np.stack([render(s, image_size, rng) for s in scenes])
    contact_sheet(images, [caption(s, style, rng) for s in scenes], out)
    print(f"wrote {out} ({n} scenes, {style} captions)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synth2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    world = commands.add_parser("world", help="the shapes world").add_subparsers(dest="world_command", required=True)
    show = world.add_parser("show", help="write a contact sheet of scenes and captions")
    show.add_argument("out", help="PNG file to write")
    show.add_argument("--n", type=int, default=16, help="number of scenes (default 16)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--style", choices=("human", "corpus"), default="human")
    show.add_argument("--image-size", type=int, default=32)
    results = commands.add_parser("results", help="print the results table of the last evaluation")
    results.add_argument("--split", choices=("test", "val"), default="test", help="test (default) or validation")
    study = commands.add_parser(
        "study",
        help="run the pipeline for several seeds as DVC experiments and aggregate them with intervals",
        description="Run from the project root. See src/synth2/study/.",
    )
    add_study_arguments(study)
    tracking = commands.add_parser("tracking", help="MLflow tracking").add_subparsers(
        dest="tracking_command", required=True
    )
    sync = tracking.add_parser(
        "sync",
        help="send the runs kept in .synth2/spool to MLflow now; a line per store: sent, or waiting and why",
        description="See src/synth2/tracking/sync.py.",
    )
    add_sync_arguments(sync)
    relink = tracking.add_parser(
        "relink",
        help="point the project's MLflow store at the artifacts beside it, after the checkout moved",
        description="See src/synth2/tracking/relink.py.",
    )
    relink.add_argument("--tracking-uri", metavar="URI", help="the store (default: the one the stages record to)")
    return parser


def study_command(args: argparse.Namespace) -> None:
    import logging

    from synth2.study.arguments import StudyArguments
    from synth2.study.plan import plan
    from synth2.study.report import markdown
    from synth2.study.workflow import run_study

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    study = plan(StudyArguments.from_namespace(args))
    report = run_study(study)
    print(markdown(report))
    print(f"wrote {', '.join(report['outputs'].values())}; MLflow run {report['mlflow_run_id']}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    terminate_as_interrupt()
    with user_errors(f"synth2 {args.command}"):
        if args.command == "world" and args.world_command == "show":
            if args.n <= 0:
                raise Synth2Error(f"--n must be positive, got {args.n}")
            world_show(args.n, args.out, args.seed, args.style, args.image_size)
        elif args.command == "results":
            from synth2.results import results_table

            print(results_table(args.split))
        elif args.command == "study":
            study_command(args)
        elif args.command == "tracking" and args.tracking_command == "relink":
            from synth2.tracking.relink import relink_command

            relink_command(args.tracking_uri)
        elif args.command == "tracking":
            from synth2.tracking.sync import sync_command

            sync_command(args)


if __name__ == "__main__":
    main()
