"""`python tasks/_repro.py STAGE RESULT_JSON [--force]`: reproduce one DVC stage with DVC's Python API.

Run in a subprocess by `tasks.dvc_stages.run_dvc_stage` so the task gets DVC's own answer to "did the
stage run?" (the list `Repo.reproduce` returns) while DVC keeps its locks, cache and dvc.lock, and the
flow process stays free of DVC's global state.
"""

from __future__ import annotations

import json
import sys

from dvc.exceptions import DvcException
from dvc.repo import Repo


def main(argv: list[str]) -> int:
    stage, result_path, *flags = argv
    try:
        with Repo(".") as repo:
            # single_item: the flow walks the DAG itself, one task per stage; upstream is done.
            reproduced = repo.reproduce(stage, single_item=True, force="--force" in flags)
    except DvcException as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        print(f"dvc: {exc}{cause}", file=sys.stderr)
        return 1
    ran = [s.addressing for s in reproduced]
    with open(result_path, "w") as f:
        json.dump({"stage": stage, "ran": stage in ran}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
