"""`make run`: the pipeline, through Prefect only when there is work.

    python -m flows.run      # what `make run` runs: `python -m flows.pipeline` with no options

When `dvc status` finds every stage up to date (and no DVC remote is set to pull from or push to), this
says so in one line without importing Prefect, whose import alone (about 1.5 s on an idle machine, 4 s on
a busy one) was most of a no-op's time next to DVC's own second. Otherwise it hands over to the flow's
command line (flows.pipeline), telling it the status is known.
"""

from __future__ import annotations

import sys

from flows.common import nothing_ran, up_to_date
from synth2.errors import terminate_as_interrupt, user_errors


def main() -> int:
    terminate_as_interrupt()
    with user_errors("synth2 pipeline"):
        current = up_to_date(None, None)  # a params mistake is its one line here
    if current is not None:
        print(nothing_ran(current))
        return 0
    from flows import pipeline

    return pipeline.main([], checked=True)


if __name__ == "__main__":
    sys.exit(main())
