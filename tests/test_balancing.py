import numpy as np
import pandas as pd
import pytest

from synth2.balancing import (
    balance_captions,
    balanced_order,
    greedy_near_duplicates,
    normalise_caption,
    unbalanced_selection,
)
from synth2.diversity import entropy_bits
from synth2.errors import Synth2Error
from synth2.text_embed import embed_texts
from synth2.world.grammar import caption
from synth2.world.parser import caption_labels
from synth2.world.scenes import COLOURS, POSITIONS, SHAPES, SIZES, Scene
from tests.conftest import default_params


def world_labels(work: pd.DataFrame) -> pd.DataFrame:
    """The world profile's labeller: what the parser reads from each caption."""
    return caption_labels(work["caption"].tolist())


def balance_params(**overrides):
    return default_params().balance.model_copy(update=overrides)


@pytest.fixture(scope="module")
def embed():
    """The real MiniLM, loaded once (the model is cached per process after this)."""
    assert embed_texts(["warm up"]).shape == (1, 384)
    return embed_texts


def bag_of_words_embed(texts: list[str]) -> np.ndarray:
    """A cheap deterministic stand-in for MiniLM where the test is not about embeddings."""
    vocab: dict[str, int] = {}
    rows = []
    for text in texts:
        row = np.zeros(64, dtype=np.float32)
        for word in text.split():
            row[vocab.setdefault(word, len(vocab)) % 64] += 1.0
        rows.append(row / max(np.linalg.norm(row), 1e-6))
    return np.stack(rows)


def skewed_captions(n: int, seed: int, exclude: tuple[str, str] | None = None) -> list[str]:
    """Corpus-style captions whose colour-shape concepts are Zipf-skewed, as the caption LM's are."""
    rng = np.random.default_rng(seed)
    combos = [(c, s) for c in COLOURS for s in SHAPES if (c, s) != exclude]
    weights = 1.0 / np.arange(1, len(combos) + 1) ** 1.2
    picks = rng.choice(len(combos), size=n, p=weights / weights.sum())
    out = []
    for i in picks:
        scene = Scene(*combos[i], str(rng.choice(SIZES)), str(rng.choice(POSITIONS)))
        out.append(caption(scene, "corpus", rng))
    return out


def concept_entropy(concepts) -> float:
    return entropy_bits(pd.Series(list(concepts)).dropna().value_counts().to_numpy())


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("  A Small  RED star\tin the top left. ", "a small red star in the top left"),
        ("a red star!?", "a red star"),
        ("a red star , ", "a red star"),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_normalise_caption(raw, want):
    assert normalise_caption(raw) == want


def naive_greedy(x: np.ndarray, threshold: float, groups=None) -> np.ndarray:
    keep = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        earlier = [j for j in range(i) if keep[j] and (groups is None or groups[j] == groups[i])]
        keep[i] = all(float(x[i] @ x[j]) <= threshold for j in earlier)
    return keep


def test_greedy_near_duplicates_equals_the_sequential_pass_across_chunks():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    # Planted near-copies of earlier rows, and chains (a~b, b~c) where order decides what survives.
    x = np.concatenate([base, base[:15] + 0.05 * rng.normal(size=(15, 16)), base[:5] + 0.3 * rng.normal(size=(5, 16))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    x = x[rng.permutation(len(x))]
    groups = rng.integers(0, 3, size=len(x))
    for threshold in (0.9, 0.99):
        want = naive_greedy(x, threshold)
        assert 0 < want.sum() < len(x)
        for chunk in (7, 1000):  # many chunk boundaries, and a single chunk
            np.testing.assert_array_equal(greedy_near_duplicates(x, threshold, chunk_size=chunk), want)
            np.testing.assert_array_equal(
                greedy_near_duplicates(x, threshold, groups=groups, chunk_size=chunk),
                naive_greedy(x, threshold, groups),
            )


def test_balanced_order_is_round_robin_over_concepts_then_clusters():
    concepts = ["red star"] * 50 + ["blue circle"] * 5 + ["green cross"] * 4
    clusters = [i % 5 for i in range(50)] + [0] * 5 + [1, 2, 1, 2]
    order = balanced_order(concepts, clusters, seed=3)
    assert sorted(order) == list(range(len(concepts)))
    picked = [concepts[i] for i in order]
    # Every prefix of whole rounds holds each concept equally often while all still have captions.
    for rounds in range(1, 5):
        assert pd.Series(picked[: 3 * rounds]).value_counts().to_dict() == {c: rounds for c in set(concepts)}
    # Within "red star" the first five picks visit all five of its clusters.
    red_clusters = [clusters[i] for i in order if concepts[i] == "red star"][:5]
    assert sorted(red_clusters) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(order, balanced_order(concepts, clusters, seed=3))
    assert not np.array_equal(order, balanced_order(concepts, clusters, seed=4))


def test_balancing_removes_junk_and_repeats_and_raises_concept_entropy(embed):
    # The injected captions are the only ones of their concept, so round-robin selection must pick
    # whatever of them survives the filters (every concept gets >= 2 picks: 120 >= 2 x 48).
    captions = skewed_captions(400, seed=0, exclude=("cyan", "diamond"))
    repeats = [
        "  A SMALL Cyan Diamond in the top left.  ",  # exact duplicate of the next line once normalised
        "a small cyan diamond in the top left",
        "a small cyan diamond in the top left!",
    ]
    synonym_swap = "a tiny cyan diamond in the top left"  # same content, MiniLM cosine > 0.97
    other_position = "a small cyan diamond in the top right"  # cosine > 0.97, but says something else
    garbage = ["asdf qwerty zxcv", "the the the the", "a photo of a dog on a sofa"]
    malformed = ["", "a small red <unk> star ### in the top left"]  # the second one parses
    too_short, too_long = "red star", "a small red star in the top left " + "and nothing else " * 10
    df = pd.DataFrame(
        {"caption": repeats + [synonym_swap, other_position] + garbage + malformed + [too_short, too_long] + captions}
    )
    df["source"] = np.arange(len(df))

    params = balance_params(target_size=120, n_clusters=8, max_words=30)
    selected, report = balance_captions(df, params, seed=0, embed_fn=embed, labeller=world_labels)

    removed = report["removed"]
    assert removed["exact_duplicates"] >= 2  # the repeats, plus the skewed set's own repeats
    assert removed["malformed"] == len(malformed)
    assert removed["unparseable"] == len(garbage)
    assert removed["length"] == 2
    assert removed["near_duplicates"] >= 1
    assert report["selected"] == len(selected) == 120 and not report["short_of_target"]
    assert [s["step"] for s in report["steps"]] == [
        "normalise",
        "exact_duplicates",
        "malformed",
        "unparseable",
        "length",
        "near_duplicates",
        "select",
    ]
    assert sum(s["removed"] for s in report["steps"]) == len(df) - len(selected)

    kept = set(selected["caption"])
    assert selected["caption"].is_unique
    assert "a small cyan diamond in the top left" in kept  # first of the repeats survives, normalised
    assert synonym_swap not in kept
    assert other_position in kept  # the near-duplicate test must not erase attribute differences
    assert not kept & {normalise_caption(g) for g in garbage + malformed + [too_short, too_long]}

    # Balance: the selection's concept distribution is much flatter than the input's.
    input_concepts = [f"{c} {s}" for c, s in (caption_concept(t) for t in captions)]
    assert concept_entropy(selected["concept"]) > concept_entropy(input_concepts) + 0.8  # measured 5.4 vs 4.2 bits
    counts = selected["concept"].value_counts()
    assert counts.max() <= 2 * 120 / selected["concept"].nunique() + 1

    # Columns: original ones, raw text, parsed attributes, concept, cluster.
    for column in (
        "caption",
        "caption_raw",
        "source",
        "colour",
        "shape",
        "size",
        "position",
        "relation",
        "concept",
        "cluster",
    ):
        assert column in selected.columns
    assert (selected["concept"] == selected["colour"] + " " + selected["shape"]).all()
    assert selected["cluster"].between(0, 7).all()


def caption_concept(text: str) -> tuple[str, str]:
    from synth2.world.parser import parse

    parsed = parse(text)
    return parsed.colour, parsed.shape


def test_balancing_takes_everything_when_fewer_than_target_survive():
    df = pd.DataFrame({"caption": ["a small red star in the top left", "a large blue circle in the center", "xyz"]})
    params = balance_params(target_size=50, n_clusters=4)
    selected, report = balance_captions(df, params, seed=0, embed_fn=bag_of_words_embed, labeller=world_labels)
    assert len(selected) == 2 and report["short_of_target"] and report["selected"] == 2


def test_balancing_is_deterministic_for_a_seed():
    df = pd.DataFrame({"caption": skewed_captions(200, seed=1)})
    params = balance_params(target_size=40, n_clusters=5)
    a, _ = balance_captions(df, params, seed=7, embed_fn=bag_of_words_embed, labeller=world_labels)
    b, _ = balance_captions(df, params, seed=7, embed_fn=bag_of_words_embed, labeller=world_labels)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("captions", "params", "step"),
    [
        (["asdf", "hello world", "???"], balance_params(), "unparseable"),
        (["<<>>", "### ###"], balance_params(), "malformed"),
        (["a small red star in the top left"], balance_params(min_words=20, max_words=30), "length"),
        ([], balance_params(), "input"),
    ],
)
def test_zero_survivors_raise_naming_the_step(captions, params, step):
    df = pd.DataFrame({"caption": pd.Series(captions, dtype=object)})
    with pytest.raises(Synth2Error, match=f"step '{step}' removed the last"):
        balance_captions(df, params, seed=0, embed_fn=bag_of_words_embed, labeller=world_labels)


def test_missing_caption_column_is_a_clear_error():
    with pytest.raises(Synth2Error, match="no 'caption' column"):
        balance_captions(pd.DataFrame({"text": ["a red star"]}), balance_params(), 0, bag_of_words_embed, world_labels)


def test_unbalanced_selection_keeps_duplicates_and_garbage():
    df = pd.DataFrame(
        {"caption": ["a small red star in the top left"] * 30 + ["gibberish words here"] * 10, "k": range(40)}
    )
    sample = unbalanced_selection(df, size=25, seed=0, labeller=world_labels)
    assert len(sample) == 25
    assert sample["caption"].duplicated().any()
    assert (sample["caption"] == "gibberish words here").any()
    garbage = sample[sample["caption"] == "gibberish words here"]
    assert garbage["concept"].isna().all() and garbage["colour"].isna().all()
    good = sample[sample["caption"] != "gibberish words here"]
    assert (good["concept"] == "red star").all() and (good["position"] == "top left").all()
    pd.testing.assert_frame_equal(sample, unbalanced_selection(df, size=25, seed=0, labeller=world_labels))
    assert len(unbalanced_selection(df, size=100, seed=0, labeller=world_labels)) == 40


def test_minilm_cannot_tell_a_position_change_from_a_synonym_swap(embed):
    """Why near-duplicates must share parsed content: cosine alone would erase a different position."""
    texts = [
        "a small cyan diamond in the top left",
        "a tiny cyan diamond in the top left",  # synonym swap: same scene
        "a small cyan diamond in the top right",  # a different scene
    ]
    x = embed(texts)
    threshold = balance_params().near_duplicate_threshold
    assert float(x[0] @ x[2]) > threshold  # the measured problem (cosine 0.992)
    assert greedy_near_duplicates(x, threshold).tolist() == [True, False, False]
    content = [("cyan", "diamond", "small", "top left")] * 2 + [("cyan", "diamond", "small", "top right")]
    assert greedy_near_duplicates(x, threshold, groups=content).tolist() == [True, False, True]


def test_malformed_filter_is_the_balanced_gate_pattern():
    from synth2 import balancing, gates

    assert balancing.CAPTION_PATTERN == gates.CAPTION_PATTERN
