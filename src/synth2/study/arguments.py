"""The `synth2 study` command line, defined once: `synth2 study` and `python -m flows.study` both add
these arguments, and the flow's parameters go through the same conversion, so the two accept the same
values and fail with the same one-line message.

Values are converted here rather than by argparse `type=` functions: argparse would print its usage and
exit 2, while a Synth2Error is one line naming the argument and the fix (synth2.errors), the same line
whether the value came from the command line or from a deployment's parameters.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from synth2.study.plan import BUDGET_KEY, StudyError, Sweep

DEFAULT_SEEDS = 5
OVERRIDE_EXAMPLE = "-S balance.target_size=500"
SWEEP_EXAMPLE = "--sweep world.prepare.real_train_size=500,1000,2000"


@dataclass
class StudyArguments:
    """What a study is asked for, before it is checked against the project (synth2.study.plan)."""

    name: str = "study"
    seeds: list[int] = field(default_factory=lambda: list(range(DEFAULT_SEEDS)))
    overrides: dict[str, Any] = field(default_factory=dict)
    sweep: Sweep | None = None
    preset: str | None = None
    jobs: int = 2

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> StudyArguments:
        return cls.from_parameters(
            args.seeds, args.sets, args.budgets, args.preset, args.jobs, args.name, sweep=args.sweep
        )

    @classmethod
    def from_parameters(
        cls,
        seeds: int | str | Sequence[int] = DEFAULT_SEEDS,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
        budgets: str | Sequence[int] | None = None,
        preset: str | None = None,
        jobs: int = 2,
        name: str = "study",
        sweep: str | Mapping[str, Any] | Sequence[str] | None = None,
    ) -> StudyArguments:
        """From the command line's strings or a flow's typed parameters (a count or a list of seeds,
        KEY=VALUE strings or a mapping of overrides, budgets as "250,500" or a list, the sweep as
        "KEY=V1,V2" or {"key": KEY, "values": [V1, V2]}). `budgets` is the sweep of balance.target_size."""
        swept, budget_list = parse_sweep(sweep), parse_budgets(budgets)
        if swept and budget_list:
            raise StudyError(
                f"--sweep and --budgets: one sweep per study (--budgets 250,500 is --sweep {BUDGET_KEY}=250,500)"
            )
        if budget_list:
            swept = Sweep(BUDGET_KEY, budget_list)
        return cls(name, parse_seeds(seeds), parse_overrides(overrides), swept, preset, jobs)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--seeds", default=str(DEFAULT_SEEDS), help=f"a count ({DEFAULT_SEEDS}: seeds 0-4) or a list (0,3,7)"
    )
    parser.add_argument(
        "-S", "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a param"
    )
    parser.add_argument(
        "--sweep",
        action="append",  # given twice, it is refused (one sweep per study) rather than silently replaced
        metavar="KEY=V1,V2,...",
        help="run every value of a param with every seed, e.g. world.prepare.real_train_size=500,1000,2000",
    )
    parser.add_argument("--budgets", help=f"shorthand for --sweep {BUDGET_KEY}=..., e.g. 250,500,1000")
    parser.add_argument("--preset", help="a size overlay of synth2.presets (tiny: seconds per stage)")
    parser.add_argument("--jobs", type=int, default=2, help="DVC queue workers running experiments at once")
    parser.add_argument("--name", default="study", help="names the experiments and reports/study/NAME.*")
    return parser


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """A count (5: seeds 0-4) or a list (0,3,7; a single seed needs its comma: 7,)."""
    if isinstance(seeds, bool):
        raise StudyError(f"--seeds {seeds!r}: expected a count (5: seeds 0-4) or a list (0,3,7)")
    if isinstance(seeds, int):
        return list(range(seeds))
    if isinstance(seeds, str):
        values = _integers("--seeds", seeds, "a count (5: seeds 0-4) or a list (0,3,7)")
        return list(range(values[0])) if len(values) == 1 and "," not in seeds else values
    return [int(s) for s in seeds]


def parse_budgets(budgets: str | Sequence[int] | None) -> list[int] | None:
    if budgets is None or budgets == "":
        return None
    return (
        _integers("--budgets", budgets, "integers separated by commas, e.g. 250,500,1000")
        if isinstance(budgets, str)
        else [int(b) for b in budgets]
    )


def parse_sweep(sweep: str | Mapping[str, Any] | Sequence[str] | None) -> Sweep | None:
    """ "KEY=V1,V2,..." (each value read as YAML, as -S values are: 500, 0.25, true), a list of one such
    string (the command line's), or {"key": KEY, "values": [...]} (a flow's typed parameter, the shape the
    report records). The key is checked against params.yaml by the plan."""
    if sweep is None or sweep == "" or sweep == []:
        return None
    if isinstance(sweep, Mapping):
        if set(sweep) != {"key", "values"} or isinstance(sweep["values"], str | bytes):
            raise StudyError(f"--sweep {dict(sweep)!r}: expected {{'key': KEY, 'values': [V1, V2, ...]}}")
        key, values = str(sweep["key"]).strip(), list(sweep["values"])
    elif isinstance(sweep, str):
        key, values = _sweep_from_text(sweep)
    else:
        if len(sweep) != 1:
            raise StudyError(f"--sweep given {len(sweep)} times: one sweep per study")
        return parse_sweep(sweep[0])
    if not key or not values:
        raise StudyError(f"--sweep {sweep!r}: expected KEY=V1,V2,..., e.g. {SWEEP_EXAMPLE}")
    for value in values:
        if isinstance(value, Mapping | list | tuple):
            raise StudyError(f"--sweep {key}: value {value!r} is not a scalar (a number, a string, true/false or null)")
    repeated = sorted({repr(v) for v in values if values.count(v) > 1})
    if repeated:
        raise StudyError(f"--sweep {key}: value {repeated[0]} is given twice")
    return Sweep(key, values)


def _sweep_from_text(text: str) -> tuple[str, list[Any]]:
    import yaml

    key, sep, rest = text.partition("=")
    if not sep:
        raise StudyError(f"--sweep {text!r}: expected KEY=V1,V2,..., e.g. {SWEEP_EXAMPLE}")
    values = []
    for item in (v.strip() for v in rest.split(",")):
        if not item:
            continue
        try:
            values.append(yaml.safe_load(item))
        except yaml.YAMLError:
            raise StudyError(f"--sweep {key.strip()}: value {item!r} is not a YAML scalar") from None
    return key.strip(), values


def parse_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """KEY=VALUE strings (values read as YAML: 500, true, [1, 2]) or a mapping, into {key: value}."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    return dict(parse_override(text) for text in overrides)


def parse_override(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise StudyError(f"-S {text!r}: expected KEY=VALUE, e.g. {OVERRIDE_EXAMPLE}")
    return key.strip(), yaml.safe_load(value)


def _integers(argument: str, text: str, expected: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise StudyError(f"{argument} {text!r}: expected {expected}")
    return values
