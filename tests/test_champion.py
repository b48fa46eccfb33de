"""The champion is chosen on validation, never on test (synth2.stages.evaluate.choose_champion), and what the
registry weighs it on is its per-image validation scores (champion_evidence; the alias: test_champion_alias.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from synth2.errors import Synth2Error
from synth2.stages.evaluate import champion_evidence, choose_champion


def scores(values: dict[str, float]) -> dict:
    return {variant: {"unseen": {"attr_all": value, "cider": 1.0}} for variant, value in values.items()}


def test_validation_decides_when_test_disagrees():
    metrics = {
        "val": scores({"baseline": 0.40, "synth": 0.55, "synth_unbalanced": 0.50}),
        "test": scores({"baseline": 0.90, "synth": 0.10, "synth_unbalanced": 0.95}),  # the opposite order
    }
    champion = choose_champion(metrics, "unseen.attr_all")
    assert champion["variant"] == "synth" and champion["metric"] == "val.unseen.attr_all"
    assert champion["value"] == 0.55 and champion["margin"] == pytest.approx(0.05)


def test_an_unknown_metric_names_the_ones_available():
    metrics = {"val": scores({"baseline": 0.4, "synth": 0.5, "synth_unbalanced": 0.45}), "test": {}}
    with pytest.raises(Synth2Error, match=r"tracking.champion_metric: 'unseen.bleu9'.*unseen.attr_all, unseen.cider"):
        choose_champion(metrics, "unseen.bleu9")


def test_the_evidence_is_each_variants_per_image_validation_score_by_image_id():
    per_image = pd.DataFrame(
        {
            "image_id": [1, 2, 1, 2, 1, 2],
            "split": ["val", "val", "val", "test", "val", "val"],
            "subset": ["unseen", "unseen", "overall", "unseen", "unseen", "unseen"],
            "variant": ["baseline", "baseline", "baseline", "synth", "synth", "synth"],
            "cider": [0.1, 0.2, 9.0, 9.0, 0.3, 0.4],
            "attr_all": [0.0, 1.0, 9.0, 9.0, 1.0, 1.0],
        }
    )
    assert champion_evidence(per_image, "unseen.attr_all") == {"baseline": {1: 0.0, 2: 1.0}, "synth": {1: 1.0, 2: 1.0}}
    with pytest.raises(Synth2Error, match=r"'unseen.bleu4' has no per-image scores.*pick one of unseen.cider, unseen"):
        champion_evidence(per_image, "unseen.bleu4")
