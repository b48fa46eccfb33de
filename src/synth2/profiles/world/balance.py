"""balance hooks (world): captions are labelled by what the world parser reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2.profiles import CaptionLabellers
from synth2.world.parser import caption_labels
from synth2.world.scenes import all_combos

if TYPE_CHECKING:
    import pandas as pd

    from synth2.params import Params


def caption_labellers(params: Params) -> CaptionLabellers:
    """Both sets are labelled by the parser; diversity counts colour-shape combinations."""

    def label(work: pd.DataFrame) -> pd.DataFrame:
        return caption_labels(work["caption"].tolist())

    return CaptionLabellers(label, label, concepts=[f"{c} {s}" for c, s in all_combos()])
