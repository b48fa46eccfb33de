"""Gate hooks (coco): ids, paths and captions present, every evaluation image with references."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.gates import Table, concepts_table, expectations
from synth2.io import read_parquet

if TYPE_CHECKING:
    from synth2.params import Params

CONCEPT_KIND = "class"  # balancing balances over COCO classes
LABEL_COLUMNS: tuple[str, ...] = ()  # labels the balanced gate requires besides the concept


def pool_tables(params: Params) -> list[Table]:
    """None: the coco profile has no unlabelled pool (its image encoder is pretrained)."""
    return []


def real_tables(params: Params) -> list[Table]:
    gxe = expectations()
    tables = []
    for name, path in (("real_train", paths.REAL_TRAIN), ("val", paths.VAL), ("test", paths.TEST)):
        frame = read_parquet(path, columns=["image_id", "file_name", "image_path"])
        exps = [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("image_id", "file_name", "image_path")),
        ]
        if name == "real_train":
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column="caption"))
        else:
            frame = frame.assign(n_references=frame["references"].map(lambda r: 0 if r is None else len(r)))
            exps += [
                gxe.ExpectColumnValuesToBeUnique(column="image_id"),
                gxe.ExpectColumnValuesToNotBeNull(column="seen"),
                gxe.ExpectColumnValuesToBeBetween(column="n_references", min_value=1),
            ]
        tables.append(Table(name, frame, exps, ["image_id", "file_name", "caption"]))
    tables.append(concepts_table())
    return tables
