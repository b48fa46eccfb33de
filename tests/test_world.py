import numpy as np
import pytest

from synth2.world.datasets import build_world, choose_held_out
from synth2.world.grammar import STYLES, caption, templates
from synth2.world.parser import parse
from synth2.world.scenes import (
    COLOURS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    render,
    second_position,
)
from tests.conftest import default_params


def all_scenes():
    for colour in COLOURS:
        for shape in SHAPES:
            for size in SIZES:
                for position in POSITIONS:
                    yield Scene(colour, shape, size, position)
                    for relation in RELATIONS:
                        if second_position(position, relation) is not None:
                            yield Scene(colour, shape, size, position, "orange", "cross", relation)


@pytest.mark.parametrize("style", STYLES)
def test_parse_inverts_caption_for_every_template_and_combination(style):
    rng = np.random.default_rng(0)  # drives the corpus synonyms
    checked = 0
    for scene in all_scenes():
        for template in range(len(templates(style))):
            parsed = parse(caption(scene, style, rng, template))
            got = (
                parsed.colour,
                parsed.shape,
                parsed.size,
                parsed.position,
                parsed.colour2,
                parsed.shape2,
                parsed.relation,
            )
            want = (scene.colour, scene.shape, scene.size, scene.position, scene.colour2, scene.shape2, scene.relation)
            assert got == want, caption(scene, style, None, template)
            checked += 1
    assert checked > 4000


def test_parser_rejects_text_outside_the_world():
    assert not parse("a photo of a dog on a sofa").is_valid
    assert not parse("red red red").is_valid
    assert parse("red star").is_valid


def test_render_shapes_differ_and_are_deterministic():
    images = {s: render(Scene("white", s, "small", "center"), 32) for s in SHAPES}
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                # Even small objects differ by many pixels between any two shapes.
                assert np.abs(images[a].astype(int) - images[b].astype(int)).sum() > 2000, (a, b)
    scene = Scene("red", "star", "large", "top left", "blue", "circle", "left of")
    one = render(scene, 32, np.random.default_rng(3))
    two = render(scene, 32, np.random.default_rng(3))
    assert one.dtype == np.uint8 and one.shape == (32, 32, 3)
    assert np.array_equal(one, two)


def test_second_object_is_drawn_where_the_relation_says():
    scene = Scene("red", "square", "large", "left", "blue", "square", "left of")
    image = render(scene, 48).astype(int)
    blue = (image[..., 2] > 150) & (image[..., 0] < 120)
    red = (image[..., 0] > 150) & (image[..., 2] < 120)
    assert blue.any() and red.any()
    assert np.nonzero(red)[1].mean() < np.nonzero(blue)[1].mean()


def test_held_out_keeps_every_word_seen():
    held = choose_held_out(np.random.default_rng(1), 0.25)
    assert len(held) == 12
    seen = {f"{c} {s}" for c in COLOURS for s in SHAPES} - set(held)
    assert {x.split()[0] for x in seen} == set(COLOURS)
    assert {x.split()[1] for x in seen} == set(SHAPES)


def test_splits_respect_the_paper_setting():
    params = default_params(
        {
            "world": {
                "prepare": {"pool_size": 300, "real_train_size": 400, "text_corpus_size": 3000, "test_per_combo": 2}
            }
        }
    ).world.prepare
    world = build_world(params, seed=5, progress=False)
    held = set(world.held_out)
    assert held and not held & set(world.real_train["combo"])
    assert held <= set(world.text_corpus["combo"])
    for evaluation in (world.val, world.test):
        assert held <= set(evaluation["combo"])
        assert set(evaluation.loc[~evaluation["seen"], "combo"]) == held
        assert evaluation["combo"].value_counts().nunique() == 1  # uniform over combinations
        assert evaluation["references"].map(len).min() >= 3
    # Zipf skew: the most frequent real combination is far more common than the rarest.
    counts = world.real_train["combo"].value_counts()
    assert counts.max() >= 5 * counts.min()
    # The corpus style only partly overlaps the human one.
    human, corpus = set(world.real_train["caption"]), set(world.text_corpus["caption"])
    assert human & corpus and len(corpus - human) > len(corpus) / 2
    # Image ids index disjoint rows of the one pixel array; validation and test share no image.
    tables = (world.pool, world.real_train, world.val, world.test)
    ids = np.concatenate([table["image_id"] for table in tables])
    assert np.array_equal(np.sort(ids), np.arange(len(world.pixels)))
    # Captions describe their own image's scene.
    for row in world.real_train.head(50).itertuples():
        parsed = parse(row.caption)
        assert (parsed.colour, parsed.shape, parsed.size, parsed.position) == (
            row.colour,
            row.shape,
            row.size,
            row.position,
        )
    assert set(world.concepts["kind"]) == {"colour", "shape", "combo"}
