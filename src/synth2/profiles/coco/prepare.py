"""prepare hooks (coco): a COCO-format captions JSON and its image folder (synth2.coco.dataset)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from synth2.coco.champion import check_champion_metric
from synth2.coco.dataset import build_coco
from synth2.profiles import PreparedData

if TYPE_CHECKING:
    from synth2.params import Params


def prepare(params: Params) -> PreparedData:
    """real_train, val, test and concepts from the JSON; no pixels (the images stay in the image folder);
    the unlabelled pool and the text corpus have no rows (the pretrained models bring their own knowledge),
    so that every profile writes the outputs dvc.yaml declares.

    The champion metric is checked against the validation split here, the first moment the data are known,
    rather than only by evaluate after every other stage has run (prepare's outputs do not depend on it,
    so dvc.yaml does not declare it: evaluate checks again before captioning)."""
    data = build_coco(params.coco.prepare, params.seed)
    check_champion_metric(params.tracking.champion_metric, data.val)
    image_sets = {
        "unlabeled_pool": pd.DataFrame({"image_id": pd.Series([], dtype="int64")}),
        "real_train": data.real_train,
        "val": data.val,
        "test": data.test,
    }
    text_corpus = pd.DataFrame({"caption": pd.Series([], dtype=str)})
    return PreparedData(image_sets, {}, text_corpus, data.concepts, data.report)
