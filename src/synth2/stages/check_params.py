"""Stage `check_params`: validate the whole params.yaml before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a params mistake found inside a
stage has already cost that stage's previous outputs (and `cache: false` metrics and plots do not come
back with `dvc checkout`). Every stage depends on this stage's output, so under a bare `dvc repro` the
whole file is checked first and a mistake stops the pipeline before DVC touches anything else. The stage
frame has checked types and ranges (synth2.params); here the profile checks what only it knows (e.g. coco
needs a caption LLM and scores no attribute accuracy). The output holds only what cannot change without
re-running everything anyway (the profile), so a valid edit of one key does not make every stage stale.
"""

from __future__ import annotations

from synth2 import paths
from synth2.io import write_json
from synth2.params import PARAMS_FILE, Params, ParamsError
from synth2.profiles import load_hooks
from synth2.stage import end_process, stage_main


def check(params: Params) -> None:
    """What the profile cannot honour, as one line naming params.yaml and the key."""
    try:
        load_hooks(params, "check_params").check_params(params)
    except ParamsError as exc:
        raise ParamsError(f"{PARAMS_FILE}: {exc}") from None


def run(params: Params) -> None:
    check(params)
    write_json({"valid": True, "profile": params.profile}, paths.PARAMS_CHECK)


main = stage_main("check_params", run, uses_torch=False, tracked=False)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
