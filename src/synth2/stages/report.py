"""Stage `report`: one HTML page of the pipeline run, for people (synth2.report builds it).

The page is a DVC out and, like every `reports/` out, an artifact of the stage's MLflow run; the flow's
summary links to it.
"""

from __future__ import annotations

from synth2 import paths
from synth2.io import atomic_path
from synth2.params import Params
from synth2.profiles import load_hooks
from synth2.report import build_report
from synth2.stage import end_process, stage_main


def run(params: Params) -> None:
    title = f"synth2 pipeline: profile {params.profile}, seed {params.seed}"
    hooks = load_hooks(params, "report")
    page = build_report(hooks.RESULT_COLUMNS, title, hooks.figures(params))
    with atomic_path(paths.REPORT) as tmp:
        tmp.write_text(page)


main = stage_main("report", run, uses_torch=False)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
