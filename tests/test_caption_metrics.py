import numpy as np
import pandas as pd
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from synth2.caption_metrics import coco_scores, coco_tokenize
from synth2.errors import Synth2Error
from synth2.world.accuracy import attribute_accuracy
from synth2.world.grammar import STYLES, caption, templates
from synth2.world.scenes import Scene

REFERENCES = {
    "img1": ["a small red star in the top left", "there is a small red star at the top left"],
    "img2": ["a large blue circle in the center", "large blue circle located in the center"],
    "img3": ["a small green cross in the bottom right", "the image shows a small green cross in the bottom right"],
}
PREDICTIONS = {
    "img1": "A small red star, in the top left.",
    "img2": "a large blue square in the center",
    "img3": "small green cross at the bottom",
}


def test_tokenisation_drops_case_and_punctuation():
    assert coco_tokenize("  A small RED star, in the top-left. ") == "a small red star in the top left"


def test_scores_equal_pycocoevalcap_on_a_fixed_example():
    scores = coco_scores(PREDICTIONS, REFERENCES)
    # pycocoevalcap on the same text, tokenised by hand the way PTBTokenizer would.
    res = {k: [coco_tokenize(v)] for k, v in PREDICTIONS.items()}
    gts = {k: list(v) for k, v in REFERENCES.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    assert scores["bleu4"] == pytest.approx(bleu[3], abs=1e-12)
    assert scores["cider"] == pytest.approx(cider, abs=1e-12)
    assert 0.0 < scores["bleu4"] < 1.0 and scores["cider"] > 0.0


def test_better_predictions_score_higher():
    perfect = {k: refs[0] for k, refs in REFERENCES.items()}
    wrong = {k: "a purple diamond below an orange triangle" for k in REFERENCES}
    best, worst = coco_scores(perfect, REFERENCES), coco_scores(wrong, REFERENCES)
    assert best["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert best["cider"] > coco_scores(PREDICTIONS, REFERENCES)["cider"] > worst["cider"]
    assert worst["bleu4"] < 1e-3


def test_mismatched_ids_are_an_error():
    with pytest.raises(Synth2Error, match="same ids"):
        coco_scores({"img1": "a red star"}, REFERENCES)


def scenes() -> list[Scene]:
    return [
        Scene("red", "star", "small", "top left"),
        Scene("blue", "circle", "large", "center"),
        Scene("purple", "cross", "small", "bottom"),
        Scene("cyan", "diamond", "large", "right", "orange", "square", "left of"),
    ]


def test_ground_truth_captions_score_perfectly_in_every_style():
    rng = np.random.default_rng(0)
    truths, predictions = [], []
    for scene in scenes():
        for style in STYLES:
            for template in range(len(templates(style))):
                truths.append(scene)
                predictions.append(caption(scene, style, rng, template))
    assert attribute_accuracy(predictions, truths) == {
        "colour": 1.0,
        "shape": 1.0,
        "size": 1.0,
        "position": 1.0,
        "colour_shape": 1.0,
        "all": 1.0,
    }


def test_wrong_colour_scores_zero_on_colour_only():
    truths = scenes()
    wrong_colour = [caption(Scene("white", s.shape, s.size, s.position), "human") for s in truths]
    acc = attribute_accuracy(wrong_colour, truths)
    assert acc["colour"] == 0.0 and acc["colour_shape"] == 0.0 and acc["all"] == 0.0
    assert acc["shape"] == acc["size"] == acc["position"] == 1.0


def test_unparseable_prediction_is_wrong_everywhere_and_truth_tables_work():
    truths = pd.DataFrame([s.to_row() for s in scenes()[:2]])  # a scene table, as the test split is
    acc = attribute_accuracy(["the small thing in the top left", "a large blue circle in the center"], truths)
    # The first names a size and a position correctly but no colour or shape: wrong on all four.
    assert acc == {"colour": 0.5, "shape": 0.5, "size": 0.5, "position": 0.5, "colour_shape": 0.5, "all": 0.5}
    assert (
        attribute_accuracy(
            ["a small red star in the top left"],
            [{"colour": "red", "shape": "star", "size": "small", "position": "top left"}],
        )["all"]
        == 1.0
    )
    with pytest.raises(Synth2Error, match="predictions but"):
        attribute_accuracy(["a red star"], truths)


def test_per_image_scores_stay_with_their_image():
    """evaluate's per-image scores (what `synth2 study` bootstraps over) belong to their own image id:
    the one perfect caption among wrong ones scores highest, and right, at its own id. A shuffle of the
    scores across images keeps their mean, so the mean alone cannot tell."""
    from synth2.profiles.world.evaluate import score
    from synth2.world.datasets import build_world
    from tests.conftest import default_params

    sizes = {"pool_size": 10, "real_train_size": 10, "text_corpus_size": 10, "test_per_combo": 1, "val_per_combo": 1}
    world = build_world(default_params().world.prepare.model_copy(update=sizes), seed=0, progress=False)
    table = world.test.head(12).reset_index(drop=True)
    perfect = 7
    predictions = ["a tiny purple blob somewhere"] * len(table)
    predictions[perfect] = table["references"][perfect][0]
    _, per_image = score(predictions, table)
    assert per_image["image_id"].tolist() == table["image_id"].tolist()
    best = per_image.loc[per_image["cider"].idxmax()]
    assert best["image_id"] == table["image_id"][perfect]
    assert per_image.loc[perfect, "attr_colour_shape"] == 1.0
    assert per_image.drop(index=perfect)["attr_colour_shape"].sum() == 0.0


def test_capitalised_punctuated_references_score_like_their_tokenised_form():
    """References as annotators write them (capitals, commas, full stops) are tokenised as PTBTokenizer
    does before scoring: scoring them untokenised, by the reference implementation itself, differs."""
    references = {k: [r.capitalize().replace(" in ", ", in ") + "." for r in v] for k, v in REFERENCES.items()}
    scores = coco_scores(PREDICTIONS, references)
    tokenised = {k: [coco_tokenize(r) for r in v] for k, v in references.items()}
    res = {k: [coco_tokenize(v)] for k, v in PREDICTIONS.items()}
    cider_tokenised, _ = Cider().compute_score(tokenised, res)
    cider_raw, _ = Cider().compute_score({k: list(v) for k, v in references.items()}, res)
    assert scores["cider"] == pytest.approx(cider_tokenised, abs=1e-12)
    assert abs(cider_raw - cider_tokenised) > 0.1  # the tokenisation step matters on such references
