"""Whether the registry's `champion` alias moves: only on evidence over validation images.

The best variant of a run (on `tracking.champion_metric`, over validation) takes the alias from the
current champion only when its margin, paired by validation image, has a 95% bootstrap interval above 0;
otherwise the alias stays. Each run that registers models logs its per-image validation scores as the
artifact `champion/validation_scores.json`, and every version it registers is tagged with that run, so a
later run finds the current champion's scores even when it no longer builds that model. Scores are paired
only when both were taken on the same validation table (its md5) and the same metric.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth2.bootstrap import CONFIDENCE, paired_bootstrap

log = logging.getLogger(__name__)

SCORES_ARTIFACT = "champion/validation_scores.json"
TAG_SCORES_RUN = "synth2.validation_scores.run"  # on model versions: the run whose SCORES_ARTIFACT scored it
TAG_VARIANT = "variant"  # on model versions: the variant name under which that run scored it
BOOTSTRAP_SEED = 0  # fixed: the same scores always give the same interval, and the same decision


@dataclass(frozen=True)
class Decision:
    """What happens to the alias, and why (one line, for the run's tags and the logs)."""

    moves: bool
    holder: str  # the version that holds the alias afterwards
    reason: str
    margin: float | None = None
    interval: tuple[float, float] | None = None

    def metrics(self, metric: str) -> dict[str, float]:
        """The margin and its interval under the name of the metric they are about."""
        if self.margin is None or self.interval is None:
            return {}
        name = f"{metric}.margin_over_champion"
        return {name: self.margin, f"{name}.ci95_low": self.interval[0], f"{name}.ci95_high": self.interval[1]}


def decide(
    client,
    registered_name: str,
    current,  # the ModelVersion holding the alias before this run registered anything, or None
    versions: Mapping[str, str],
    candidate: str,
    evidence: Mapping[str, Any] | None,
) -> Decision:
    """Whether `candidate` (a variant of this run, registered as `versions[candidate]`) takes the alias."""
    new = versions[candidate]
    if current is None:
        return Decision(True, new, f"{candidate} (v{new}) is the first champion of {registered_name}")
    old = str(current.version)
    if old == new:
        return Decision(False, old, f"{candidate} (v{new}) is the champion already")
    way_out = f"the alias stays on v{old}; to move it anyway, set it by hand in MLflow (model {registered_name})"
    if not evidence:
        return Decision(False, old, f"this run recorded no per-image validation scores; {way_out}")
    ours = evidence["scores"][candidate]
    theirs, why_not = _champion_scores(client, current, versions, evidence)
    if theirs is None:
        return Decision(False, old, f"v{old}, the current champion, {why_not}; {way_out}")
    shared = sorted(set(ours) & set(theirs))
    pairs = np.array([(ours[i], theirs[i]) for i in shared], dtype=float).reshape(-1, 2)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]
    if len(pairs) < 2:
        return Decision(False, old, f"fewer than 2 validation images scored by both v{new} and v{old}; {way_out}")
    a, b = pairs[:, 0], pairs[:, 1]
    margin = float(np.mean(a - b))
    low, high = paired_bootstrap(a, b, seed=BOOTSTRAP_SEED)
    moves = low > 0
    verdict = "above 0: it becomes the champion" if moves else f"not above 0: the alias stays on v{old}"
    reason = (
        f"{candidate} (v{new}) vs the champion v{old} on {evidence['metric']}: margin {margin:+.4g}, "
        f"{CONFIDENCE:.0%} bootstrap interval over {len(pairs)} validation images [{low:+.4g}, {high:+.4g}], "
        f"{verdict}"
    )
    return Decision(moves, new if moves else old, reason, margin, (low, high))


def _champion_scores(
    client, current, versions: Mapping[str, str], evidence: Mapping[str, Any]
) -> tuple[dict[str, float] | None, str]:
    """The current champion's per-image validation scores, or None and why there are none to pair with."""
    ours = {v: s for v, s in evidence["scores"].items() if versions.get(v) == str(current.version)}
    if ours:  # this run built the champion's bytes again (same md5, same version): its own scores
        return next(iter(ours.values())), ""
    run_id, variant = current.tags.get(TAG_SCORES_RUN), current.tags.get(TAG_VARIANT)
    if not run_id or not variant:
        return None, "has no per-image validation scores recorded"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            recorded = json.loads(Path(client.download_artifacts(run_id, SCORES_ARTIFACT, tmp)).read_text())
    except Exception as exc:  # the run or its artifact is gone
        return None, f"has its validation scores in run {run_id}, which cannot be read ({type(exc).__name__})"
    if recorded.get("metric") != evidence["metric"]:
        return None, f"was scored on {recorded.get('metric')}, this run on {evidence['metric']}"
    if recorded.get("validation_set") != evidence["validation_set"]:
        return None, "was scored on another validation set (its table's md5 differs)"
    if variant not in recorded.get("scores", {}):
        return None, f"has no scores as '{variant}' in run {run_id}"
    return recorded["scores"][variant], ""
