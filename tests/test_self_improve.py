"""Self-improvement rounds (params self_improve): the rounds' params, the filter's blindness to the world's
labels, accumulate against replace, and two rounds through `dvc repro` on the tiny world, cached per round."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synth2 import paths
from synth2.params import ParamsError
from synth2.pseudo_captions import filter_pseudo_captions, training_pseudo_pairs
from synth2.stages.self_improve import caption_diversity
from tests.conftest import ROOT, default_params
from tests.tiny_project import copy_project
from tests.tiny_project import dvc as run_dvc

TWO_ROUNDS = {"synth_r1": "synth", "synth_r2": "synth_r1"}


# ------------------------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("rounds", "message"),
    [
        ({"round1": "synth"}, "'round1' is no round name"),
        ({"synth_r1": "synth_r2", "synth_r2": "synth"}, "round synth_r1 captions with 'synth_r2'"),
        ({"synth_r2": "synth_r1"}, "round synth_r2 captions with 'synth_r1'"),  # no round 1 to caption with
    ],
)
def test_rounds_must_chain_back_to_synth_in_one_line(rounds: dict, message: str):
    with pytest.raises(ParamsError) as error:
        default_params({"self_improve": {"rounds": rounds}})
    assert message in str(error.value) and "self_improve.rounds" in str(error.value)
    assert "\n" not in str(error.value)


def test_rounds_are_off_by_default_and_chains_parse():
    assert default_params().self_improve.rounds == {}
    assert default_params({"self_improve": {"rounds": TWO_ROUNDS}}).self_improve.rounds == TWO_ROUNDS


def test_a_study_hands_rounds_to_dvc_as_dvc_applies_them(tmp_path: Path):
    """`synth2 study -S 'self_improve.rounds={...}'` queues `dvc exp run -S ...`: DVC's own override code
    (Hydra) must accept it on params.yaml's empty mapping and yield what the study validated."""
    from dvc.utils.hydra import apply_overrides

    from synth2.dvc_runner import set_args
    from synth2.params import parse_params, parse_with_overrides, read_document

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    overrides = {"seed": 3, "self_improve.rounds": TWO_ROUNDS}
    apply_overrides(path, set_args(overrides)[1::2])
    applied = read_document(path)
    assert applied["self_improve"]["rounds"] == TWO_ROUNDS and applied["seed"] == 3
    assert parse_params(applied) == parse_with_overrides(read_document(ROOT / "params.yaml"), overrides)


# ------------------------------------------------------------------------------------------- filter


def _embedder(dim: int):
    """A deterministic stand-in for the prior: each word a fixed random vector, a caption their sum."""

    def describe(captions: list[str]) -> np.ndarray:
        rows = []
        for caption in captions:
            vector = np.zeros(dim)
            for word in caption.split():
                seed = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "little")
                vector += np.random.default_rng(seed).normal(size=dim)
            rows.append(vector)
        return np.asarray(rows)

    return describe


def test_the_filter_never_reads_the_worlds_labels():
    """The same captions and embeddings with the world's labels intact, scrambled or removed: the same
    kept rows, in the same order, with the same agreement."""
    rng = np.random.default_rng(0)
    colours, shapes = ["red", "blue", "green"], ["circle", "square", "triangle"]
    n = 60
    table = pd.DataFrame(
        {
            "image_id": np.arange(100, 100 + n),
            "caption": [f"a {rng.choice(colours)} {rng.choice(shapes)} in the middle" for _ in range(n)],
            "colour": rng.choice(colours, n),
            "shape": rng.choice(shapes, n),
            "combo": [f"c{i % 7}" for i in range(n)],
        }
    )
    embeddings, centre = rng.normal(size=(n, 8)), rng.normal(size=8) * 0.1
    describe = _embedder(8)

    def kept(pairs: pd.DataFrame) -> pd.DataFrame:
        return filter_pseudo_captions(pairs, embeddings, describe, centre, "agreement", 0.4)[
            ["image_id", "caption", "agreement"]
        ]

    labelled = kept(table)
    scrambled = table.assign(**{c: rng.permutation(table[c].to_numpy()) for c in ("colour", "shape", "combo")})
    assert len(labelled) == 24
    pd.testing.assert_frame_equal(kept(scrambled), labelled)
    pd.testing.assert_frame_equal(kept(table[["image_id", "caption"]]), labelled)
    # The kept rows are the best agreeing ones, and none of the rest agrees better.
    dropped = filter_pseudo_captions(table, embeddings, describe, centre, "none", 1.0)
    assert dropped["agreement"].nlargest(24).sort_index().index.tolist() == labelled.index.tolist()


def test_accumulate_adds_the_previous_pairs_and_replace_drops_them():
    earlier = (pd.DataFrame({"image_id": [1, 2], "caption": ["a", "b"], "round": "synth_r1"}), np.ones((2, 3)))
    kept = (pd.DataFrame({"image_id": [7], "caption": ["c"], "round": "synth_r2"}, index=[5]), np.zeros((1, 3)))
    table, emb = training_pseudo_pairs("accumulate", earlier, kept)
    assert table["image_id"].tolist() == [1, 2, 7] and table.index.tolist() == [0, 1, 2]
    assert emb.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    table, emb = training_pseudo_pairs("replace", earlier, kept)
    assert table["image_id"].tolist() == [7] and table.index.tolist() == [0] and emb.tolist() == [[0, 0, 0]]


# --------------------------------------------------------------------------------- rounds through DVC


def _ran(result) -> set[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}


def _set_self_improve(project: Path, **settings) -> None:
    path = project / "params.yaml"
    document = yaml.safe_load(path.read_text())
    document["self_improve"] |= settings
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.mark.slow
def test_two_rounds_run_through_dvc_and_cache_per_round(tiny_pipeline: Path, tmp_path: Path):
    project = copy_project(tiny_pipeline, tmp_path / "project")

    def dvc(*args: str):
        return run_dvc(project, *args, SYNTH2_TRACKING="0")

    listed = dvc("stage", "list")
    assert listed.returncode == 0 and "self_improve" not in listed.stdout  # off by default: no stage at all

    _set_self_improve(project, rounds=TWO_ROUNDS, pool_size=40, keep_fraction=0.5)
    assert _ran(dvc("repro")) == {"check_params", "self_improve@synth_r1", "self_improve@synth_r2"}

    # Each round is scored as evaluate scores, in evaluate's per-image format.
    evaluated = pd.read_parquet(project / paths.EVAL_PER_IMAGE)
    for variant in TWO_ROUNDS:
        report = json.loads((project / paths.self_improve_metrics(variant)).read_text())
        assert report["pool"]["captioned"] == 40 and report["pool"]["kept"] == 20
        assert set(report["filter_on_validation"]) == {"top_25", "top_50", "top_75", "top_100"}
        # Diversity on the whole pool sample and on the dropped rows (not this round's training pairs).
        assert set(report["diversity"]) == {"previous", "this", "dropped"}
        dropped = pd.read_parquet(project / paths.self_improve_report(variant) / "pool_captions.parquet")
        dropped = dropped[~dropped["kept"]]
        assert report["diversity"]["dropped"]["this"] == caption_diversity(dropped[f"caption_{variant}"].tolist())
        assert set(report["test"]) == {"overall", "seen", "unseen"} and "cider" in report["val"]["overall"]
        rows = pd.read_parquet(project / paths.self_improve_report(variant) / "per_image.parquet")
        assert list(rows.columns) == list(evaluated.columns) and set(rows["variant"]) == {variant}
        assert len(rows) == len(evaluated[evaluated["variant"] == "synth"])
        assert rows.groupby(["split", "subset"])["cider"].mean()[("test", "overall")] == pytest.approx(
            report["test"]["overall"]["cider"]
        )
    # accumulate: round 2 trains on round 1's pseudo pairs, then its own kept ones.
    first, second = (pd.read_parquet(project / paths.vlm_dir(v) / paths.PSEUDO_PAIRS) for v in TWO_ROUNDS)
    assert first["round"].tolist() == ["synth_r1"] * 20
    assert second["round"].tolist() == ["synth_r1"] * 20 + ["synth_r2"] * 20
    pd.testing.assert_frame_equal(second.iloc[:20], first)

    assert _ran(dvc("repro")) == set()  # nothing changed, nothing runs
    # Round 2 alone captions with round 0's VLM now: round 1 is not run again.
    _set_self_improve(project, rounds={"synth_r1": "synth", "synth_r2": "synth"})
    assert _ran(dvc("repro")) == {"check_params", "self_improve@synth_r2"}
    second = pd.read_parquet(project / paths.vlm_dir("synth_r2") / paths.PSEUDO_PAIRS)
    assert second["round"].tolist() == ["synth_r2"] * 20  # synth has no pseudo pairs to accumulate
