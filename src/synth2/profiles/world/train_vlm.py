"""train_vlm hooks (world): the VLM starts from the caption LM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from synth2 import paths
from synth2.io import require_dir

if TYPE_CHECKING:
    from synth2.params import Params


def vlm_lm(params: Params) -> Path:
    """The caption LM, whose vocabulary covers the annotators' words."""
    return require_dir(paths.CAPTION_LM)
