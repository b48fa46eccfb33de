"""Stage `gate_<name>`: a Great Expectations data-quality gate (`python -m synth2.stages.gate NAME`).

NAME is one of real, captions, balanced, synthetic (see synth2.gates). A failed gate writes its report
and exits 1 with one line naming the failed expectations, which stops `dvc repro` and the flow.
"""

from __future__ import annotations

import sys

from synth2.gates import GATES, run_gate
from synth2.params import Params
from synth2.stage import run_stage


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in GATES:
        print(f"usage: python -m synth2.stages.gate {{{','.join(GATES)}}}", file=sys.stderr)
        sys.exit(2)
    gate = args[0]

    def run(params: Params) -> None:
        run_gate(gate, params)

    run_stage(f"gate_{gate}", run)


if __name__ == "__main__":
    main()
