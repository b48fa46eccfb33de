"""Gate hooks (world): the prepared tables' expectations; what balancing must have labelled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.gates import GateError, Table, concepts_table, expectations
from synth2.io import read_parquet
from synth2.world.scenes import COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES

if TYPE_CHECKING:
    from synth2.params import Params

CONCEPT_KIND = "combo"  # balancing balances over colour-shape combinations ("red star")
LABEL_COLUMNS = ("colour", "shape")  # labels the balanced gate requires besides the concept
SHOW = ["image_id", "colour", "shape", "size", "position", "combo", "caption"]


def _scene_expectations(with_images: int | None) -> list:
    """Attributes present and in the world's vocabularies; with an image count, unique ids, one image each."""
    gxe = expectations()
    columns = ("colour", "shape", "size", "position", "combo")
    exps: list = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    vocabularies = (
        ("colour", COLOURS),
        ("shape", SHAPES),
        ("size", SIZES),
        ("position", POSITIONS),
        ("colour2", COLOURS),  # nulls: one-object scenes
        ("shape2", SHAPES),
        ("relation", RELATIONS),
    )
    exps += [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(v)) for c, v in vocabularies]
    if with_images is not None:
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column="image_id"),
            gxe.ExpectColumnValuesToBeUnique(column="image_id"),
            gxe.ExpectTableRowCountToEqual(value=with_images),  # row i's image is the pixels' row i
        ]
    return exps


def _pixel_rows(name: str) -> int:
    from safetensors import safe_open

    path = paths.image_pixels(name)
    if not path.exists():
        raise GateError(f"{path} is missing: run the 'prepare' stage first (dvc repro prepare)")
    with safe_open(str(path), "numpy") as f:
        return f.get_slice(next(iter(f.keys()))).get_shape()[0]


def _image_set_table(name: str) -> Table:
    gxe = expectations()
    frame = read_parquet(paths.image_table(name))
    exps = [gxe.ExpectTableRowCountToBeBetween(min_value=1), *_scene_expectations(_pixel_rows(name))]
    if "caption" in frame or name == "real_train":
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="caption"))
    if name in ("val", "test"):
        frame = frame.assign(n_references=frame["references"].map(lambda r: 0 if r is None else len(r)))
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column="seen"),
            gxe.ExpectColumnValuesToBeBetween(column="n_references", min_value=1),
        ]
    return Table(name, frame, exps, SHOW)


def pool_tables(params: Params) -> list[Table]:
    """The unlabelled pool the image encoder trains on."""
    return [_image_set_table("unlabeled_pool")]


def real_tables(params: Params) -> list[Table]:
    """The human pairs, validation and test sets, the text corpus and the concepts."""
    gxe = expectations()
    corpus = read_parquet(paths.TEXT_CORPUS)
    corpus_exps = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *_scene_expectations(None),
        gxe.ExpectColumnValuesToNotBeNull(column="caption"),
    ]
    return [
        *(_image_set_table(name) for name in ("real_train", "val", "test")),
        Table("text_corpus", corpus, corpus_exps, SHOW),
        concepts_table(),
    ]
