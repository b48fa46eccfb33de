"""check_params hooks (world): nothing beyond the types and ranges synth2.params checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synth2.params import Params


def check_params(params: Params) -> None:
    """When tracking.champion_metric is not among the world's validation metrics, evaluate's choice of the
    champion names them."""
