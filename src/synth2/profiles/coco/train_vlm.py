"""train_vlm hooks (coco): the VLM's causal LM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from synth2 import paths
from synth2.io import require_dir

if TYPE_CHECKING:
    from synth2.params import Params


def vlm_lm(params: Params) -> Path:
    """`coco.train_vlm.lm_path` when set, else the caption LLM's snapshot."""
    from synth2.pretrained import resolve_source

    if params.coco.train_vlm.lm_path:
        return resolve_source(params.coco.train_vlm.lm_path, "coco.train_vlm.lm_path")
    return require_dir(paths.CAPTION_LM)
