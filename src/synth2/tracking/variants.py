"""Which VLM variant a run belongs to, and the colour MLflow's UI draws it in.

MLflow's UI colours a run by its `mlflow.runColor` tag (a CSS colour; the UI's own colour picker writes
the same tag) and otherwise by a hash of the run id, which gave two variants the same colour. The training
run of a variant (stage `train_vlm@VARIANT`) and the run its evaluation lands on carry the variant's fixed
colour, so every chart and every pipeline execution shows a variant in the same colour.
"""

from __future__ import annotations

from synth2.pipeline import VARIANT_NAMES

TAG_VARIANT = "synth2.variant"
TAG_RUN_COLOUR = "mlflow.runColor"  # MLflow's UI constant MLFLOW_RUN_COLOR_TAG

# Matplotlib's first three default colours (blue, orange, green): far apart, and the ones people know.
VARIANT_COLOURS = dict(zip(VARIANT_NAMES, ("#1f77b4", "#ff7f0e", "#2ca02c")))


def variant_of_stage(stage: str) -> str | None:
    """The variant a stage runs for: the key of a `foreach` stage over the variants (`train_vlm@synth`)."""
    _, at, key = stage.rpartition("@")
    return key if at and key in VARIANT_NAMES else None


def variant_tags(variant: str) -> dict[str, str]:
    """The tags that name a run's variant and colour it (a variant without a colour keeps MLflow's)."""
    colour = VARIANT_COLOURS.get(variant)
    return {TAG_VARIANT: variant, **({TAG_RUN_COLOUR: colour} if colour else {})}
