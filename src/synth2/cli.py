"""The `synth2` command line.

synth2 world show --n 16 OUT.png    contact sheet of freshly sampled scenes with their captions
synth2 results                      Markdown table of the evaluated variants (after `make run`)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from synth2.errors import Synth2Error


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
    commands.add_parser("results", help="print the results table of the last evaluation")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "world" and args.world_command == "show":
            if args.n <= 0:
                raise Synth2Error(f"--n must be positive, got {args.n}")
            world_show(args.n, args.out, args.seed, args.style, args.image_size)
        elif args.command == "results":
            from synth2.results import results_table

            print(results_table())
    except Synth2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
