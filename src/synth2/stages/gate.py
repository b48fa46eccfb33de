"""Stage `gate_<name>`: a Great Expectations data-quality gate (`python -m synth2.stages.gate NAME`).

NAME is one of pool, real, captions, balanced, synthetic (synth2.pipeline.GATES, which also names the
params.gates thresholds each one checks); the profile's gate hooks supply what differs (the prepared
tables to check, the labels balancing must have filled). Every gate writes its report and its page for people
(reports/gates/NAME.json and .html), both MLflow artifacts of the stage's run. A failed gate exits 1 with
one line naming the failed expectations and the page, which stops `dvc repro` and the flow.
"""

from __future__ import annotations

import sys

from synth2 import paths, tracking
from synth2.gates import GateResult, Table, balanced_tables, caption_tables, run_gate, synthetic_tables
from synth2.params import Params
from synth2.pipeline import GATES
from synth2.profiles import load_hooks
from synth2.stage import end_process, run_stage


def gate_tables(gate: str, params: Params) -> list[Table]:
    hooks = load_hooks(params, "gate")
    if gate == "pool":
        return hooks.pool_tables(params)
    if gate == "real":
        return hooks.real_tables(params)
    if gate == "captions":
        return caption_tables(params.gates)
    if gate == "balanced":
        return balanced_tables(params.gates, hooks.LABEL_COLUMNS, hooks.CONCEPT_KIND)
    return synthetic_tables(params.gates)


def check(gate: str, params: Params) -> GateResult:
    """Run the gate: validate its tables, write its report and page, record them in MLflow, raise GateError when
    it fails."""
    thresholds = {key: getattr(params.gates, key) for key in GATES[gate]}
    result = run_gate(gate, gate_tables(gate, params), thresholds)
    tracking.log_metrics(result.metrics)
    if not result.success:
        # A failed stage's outs are not logged with its run's close: the report and its page go now.
        tracking.log_artifact(paths.gate_report(gate), "reports/gates")
        tracking.log_artifact(paths.gate_page(gate), "reports/gates")
        raise result.error()
    return result


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in GATES:
        print(f"usage: python -m synth2.stages.gate {{{','.join(GATES)}}}", file=sys.stderr)
        sys.exit(2)
    gate = args[0]
    run_stage(f"gate_{gate}", lambda params: check(gate, params), uses_torch=False)


if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
