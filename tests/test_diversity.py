import itertools
import math

import numpy as np
import pytest

from synth2.diversity import (
    assign_clusters,
    distinct_n,
    diversity_report,
    entropy_bits,
    fit_kmeans,
    mean_pairwise_distance,
)
from synth2.text_embed import embed_texts

UNIVERSE = ["red star", "blue circle", "green cross", "white square"]


@pytest.fixture(scope="module")
def embed():
    """The real MiniLM, loaded once (the model is cached per process after this)."""
    assert embed_texts(["warm up"]).shape == (1, 384)
    return embed_texts


def unit_rows(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_distinct_n_counts_pooled_ngrams():
    captions = ["A b, a", "a B"]
    assert distinct_n(captions, 1) == pytest.approx(2 / 5)  # a b a a b
    assert distinct_n(captions, 2) == pytest.approx(2 / 3)  # (a b) (b a) (a b)
    assert distinct_n(["one"], 2) == 0.0


def test_entropy_in_bits():
    assert entropy_bits([5, 5, 5, 5]) == pytest.approx(2.0)
    assert entropy_bits([7, 0, 0]) == 0.0
    assert entropy_bits([3, 1]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_mean_pairwise_distance_equals_brute_force():
    x = unit_rows(30)
    brute = np.mean([1 - x[i] @ x[j] for i, j in itertools.combinations(range(30), 2)])
    assert mean_pairwise_distance(x) == pytest.approx(brute)
    assert mean_pairwise_distance(np.repeat(x[:1], 5, axis=0)) == pytest.approx(0.0, abs=1e-9)
    assert mean_pairwise_distance(x[:1]) == 0.0


def test_concept_statistics_against_a_known_distribution():
    concepts = ["red star"] * 6 + ["blue circle"] * 2 + ["green cross"] + [None]
    captions = [f"caption {i}" for i in range(9)] + ["caption 0"]
    report = diversity_report(
        captions, concepts, unit_rows(10), cluster_labels=[0] * 5 + [2] * 5, n_clusters=4, all_concepts=UNIVERSE
    )
    assert report["n"] == 10
    assert report["unique_ratio"] == pytest.approx(0.9)
    assert report["concept_entropy"] == pytest.approx(entropy_bits([6, 2, 1]))
    assert report["concept_entropy_normalised"] == pytest.approx(entropy_bits([6, 2, 1]) / 2.0)
    assert (report["concepts_covered"], report["concepts_total"]) == (3, 4)
    assert report["concept_coverage"] == pytest.approx(0.75)
    assert report["max_min_concept_ratio"] == pytest.approx(6.0)
    assert report["unknown_concept_fraction"] == pytest.approx(0.1)
    assert (report["n_clusters"], report["clusters_covered"]) == (4, 2)
    assert report["cluster_entropy_normalised"] == pytest.approx(0.5)  # 1 bit of log2(4) = 2


def test_balanced_set_scores_as_balanced():
    concepts = UNIVERSE * 5
    report = diversity_report([str(i) for i in range(20)], concepts, unit_rows(20), n_clusters=3, all_concepts=UNIVERSE)
    assert report["concept_entropy_normalised"] == pytest.approx(1.0)
    assert report["max_min_concept_ratio"] == pytest.approx(1.0)
    assert report["clusters_covered"] == 3


def test_shared_cluster_centers_make_coverage_comparable():
    x = np.concatenate([unit_rows(1, seed=s) + 0.01 * unit_rows(10, seed=10 + s) for s in range(3)])
    labels, centers = fit_kmeans(x, 3, seed=0)
    assert len(set(labels.tolist())) == 3
    np.testing.assert_array_equal(assign_clusters(x, centers), labels)
    narrow = diversity_report(["a"] * 10, ["red star"] * 10, x[:10], cluster_centers=centers, all_concepts=UNIVERSE)
    assert narrow["clusters_covered"] == 1 and narrow["n_clusters"] == 3


def test_report_rejects_ambiguous_or_misaligned_input():
    with pytest.raises(ValueError, match="one row each"):
        diversity_report(["a"], ["red star", "red star"], unit_rows(1), n_clusters=1, all_concepts=UNIVERSE)
    with pytest.raises(ValueError, match="cluster_labels"):
        diversity_report(["a"], ["red star"], unit_rows(1), all_concepts=UNIVERSE)


def test_repetitive_captions_are_less_diverse_under_minilm(embed):
    repetitive = [
        "a small red star in the top left",
        "a tiny red star in the top left",
        "a small red star at the top left",
    ]
    varied = [
        "a small red star in the top left",
        "a large blue circle in the center",
        "a green cross below a white square",
    ]
    reports = {
        name: diversity_report(caps, ["red star"] * 3, embed(caps), UNIVERSE, n_clusters=2)
        for name, caps in (("repetitive", repetitive), ("varied", varied))
    }
    assert reports["varied"]["mean_pairwise_distance"] > reports["repetitive"]["mean_pairwise_distance"] + 0.2
    assert reports["varied"]["distinct_1"] > reports["repetitive"]["distinct_1"]
