"""COCO-format captions for the coco profile, read into the same tables the shapes world writes.

* real_train: (image_id, caption, file_name, image_path), one row per human caption of a training image;
* val, test: (image_id, file_name, image_path, references, seen), one row per image, every caption a
  reference;
* concepts: (concept, kind="class"), the prompts of the caption LLM, from a text file (one per line).

`image_path` is `coco.prepare.image_dir` joined with the file name, so later stages read images through
the tables alone. `seen` marks a test image whose references name only concepts that some human training
caption names too (or none at all): the coco counterpart of the world's held-out colour–shape
combinations, which matters when the human pairs are few (see synth2.coco.concepts).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from synth2.coco.concepts import mentioned_concepts, named_concepts
from synth2.errors import Synth2Error
from synth2.params import CocoPrepareParams

log = logging.getLogger("synth2")

DEFAULT_CONCEPTS = "src/synth2/data/coco_classes.txt"  # the key's value in the repository's params.yaml
PACKAGED_CONCEPTS = Path(__file__).parents[1] / "data" / "coco_classes.txt"
SPLITS = ("train", "val", "test")
MISSING = "missing"
MISSING_EXAMPLES = 5  # bad images named in a one-line error or warning
NAMED_LIMIT = 20  # bad annotations or images named one by one in the log and metrics/prepare.json


class CocoError(Synth2Error):
    """The COCO annotations, split file, images or concepts file are missing or malformed."""


@dataclass
class CocoData:
    real_train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    concepts: pd.DataFrame
    report: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ reading


def caption_problem(value: object) -> str | None:
    """Why an annotation's caption cannot be a caption ("null", "not_text", "empty"), or None when it can.

    Checked before any conversion to str: str(None) would become the training caption "None".
    """
    if value is None:
        return "null"
    if not isinstance(value, str):
        return "not_text"
    return None if value.strip() else "empty"


def read_annotations(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(images: image_id, file_name; captions: image_id, caption; a report of the skipped captions) from a
    COCO captions JSON.

    A null, empty or non-text caption is skipped, counted and named by its annotation id (a warning and
    metrics/prepare.json): one bad annotation in a converted dataset should not stop a long run, and the
    count shows when a conversion went wrong wholesale.
    """
    if not path.is_file():
        raise CocoError(
            f"coco.prepare.annotations: no file at '{path}'; "
            "point it at a COCO captions JSON (e.g. captions_train2017.json)"
        )
    try:
        raw = json.loads(path.read_text())
        images = pd.DataFrame([{"image_id": int(i["id"]), "file_name": str(i["file_name"])} for i in raw["images"]])
        rows, rejected = [], {"null": [], "empty": [], "not_text": []}
        for index, annotation in enumerate(raw["annotations"]):
            image_id, value = int(annotation["image_id"]), annotation["caption"]
            problem = caption_problem(value)
            if problem:
                rejected[problem].append(annotation.get("id", f"annotations[{index}]"))
            else:
                rows.append({"image_id": image_id, "caption": " ".join(value.split())})
        captions = pd.DataFrame(rows, columns=["image_id", "caption"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CocoError(f"coco.prepare.annotations: '{path}' is not valid JSON ({exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CocoError(
            f"coco.prepare.annotations: '{path}' is not COCO captions format: need images[].id/file_name and "
            f"annotations[].image_id/caption ({type(exc).__name__}: {exc})"
        ) from None
    report = caption_report(rejected, len(rows))
    if images.empty or captions.empty:
        raise CocoError(
            f"coco.prepare.annotations: '{path}' lists {len(images)} images and {len(captions)} usable captions "
            f"({report['skipped']} null, empty or not text); need both"
        )
    unknown = ~captions["image_id"].isin(images["image_id"])
    if unknown.any():
        raise CocoError(
            f"coco.prepare.annotations: {int(unknown.sum())} captions name image ids absent from 'images' "
            f"(e.g. {captions.loc[unknown, 'image_id'].iloc[0]})"
        )
    return images.drop_duplicates("image_id"), captions, report


def caption_report(rejected: dict[str, list], n_kept: int) -> dict:
    """Counts of the skipped captions by reason and the first annotation ids; one warning line naming them."""
    ids = [i for reason in rejected.values() for i in reason]
    report = {
        "annotations": n_kept + len(ids),
        "skipped": len(ids),
        **{reason: len(found) for reason, found in rejected.items()},
        "skipped_annotation_ids": ids[:NAMED_LIMIT],
    }
    if ids:
        more = f" and {len(ids) - NAMED_LIMIT} more" if len(ids) > NAMED_LIMIT else ""
        log.warning(
            "skipping %d of %d captions that are null (%d), empty (%d) or not text (%d): annotation ids %s%s; "
            "fix them in coco.prepare.annotations to use them",
            len(ids),
            report["annotations"],
            report["null"],
            report["empty"],
            report["not_text"],
            ", ".join(map(str, ids[:NAMED_LIMIT])),
            more,
        )
    return report


def read_concepts(value: str) -> list[str]:
    """Concept names, one per line (blank lines and # comments skipped), in file order, without repeats."""
    path = Path(value)
    if not path.is_file() and value == DEFAULT_CONCEPTS:
        path = PACKAGED_CONCEPTS  # run outside the repository root: the copy inside the package
    if not path.is_file():
        raise CocoError(f"coco.prepare.concepts_file: no file at '{value}'; give a text file with one concept per line")
    lines = (line.split("#", 1)[0].strip().lower() for line in path.read_text().splitlines())
    concepts = list(dict.fromkeys(line for line in lines if line))
    if not concepts:
        raise CocoError(f"coco.prepare.concepts_file: '{value}' holds no concepts")
    return concepts


def image_problem(path: Path, decode: bool) -> str | None:
    """None when the image opens (with `decode`: when every pixel decodes to RGB, as image_encoder will need
    it: a truncated JPEG has a good header); else MISSING or the reader's complaint."""
    if not path.is_file():
        return MISSING
    try:
        with Image.open(path) as image:
            if decode:
                image.convert("RGB")
            else:
                image.size  # noqa: B018 - the header parse is the check
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL's ways to say "broken"
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return None


def bad_images(file_names: Sequence[str], image_dir: Path, decode: bool) -> dict[str, str]:
    """{file name: problem} of the images that are missing or do not read (fully decode, with `decode`)."""
    check = partial(image_problem, decode=decode)
    # Threads: PIL releases the GIL while it reads and decodes, and COCO folders hold 100k+ files.
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(check, [image_dir / name for name in file_names]))
    return {name: problem for name, problem in zip(file_names, problems) if problem}


def check_images(images: pd.DataFrame, image_dir: Path, policy: str, decode: bool) -> tuple[pd.DataFrame, dict]:
    """(the images that exist and open, or fully decode with `decode`; {file name: problem} of the others).
    With policy 'fail' any bad image stops prepare with one line naming the first few."""
    if not image_dir.is_dir():
        raise CocoError(
            f"coco.prepare.image_dir: no directory at '{image_dir}'; point it at the folder of the COCO images"
        )
    bad = bad_images(images["file_name"].tolist(), image_dir, decode)
    if bad and policy == "fail":
        missing = sum(problem == MISSING for problem in bad.values())
        examples = "; ".join(f"{name}: {problem}" for name, problem in list(bad.items())[:MISSING_EXAMPLES])
        raise CocoError(
            f"coco.prepare.annotations references {missing} missing and {len(bad) - missing} unreadable images in "
            f"'{image_dir}' (e.g. {examples}); restore them or set coco.prepare.missing_images: skip"
        )
    return images[~images["file_name"].isin(bad)], bad


def image_report(n_referenced: int, n_decoded: int, bad: dict[str, str]) -> dict:
    """What metrics/prepare.json says about the images (bad ones counted and named), and one warning line."""
    missing = [name for name, problem in bad.items() if problem == MISSING]
    unreadable = {name: problem for name, problem in bad.items() if problem != MISSING}
    report = {
        "referenced": n_referenced,
        "decoded": n_decoded,  # every image prepare keeps is decoded in full once
        "missing": len(missing),
        "unreadable": len(unreadable),
        "skipped": len(bad),
        "missing_files": missing[:NAMED_LIMIT],
        # "file: problem" strings, a list: `dvc metrics show` would make a column of every key of a mapping.
        "unreadable_files": [f"{name}: {problem}" for name, problem in list(unreadable.items())[:NAMED_LIMIT]],
    }
    if bad:
        named = "; ".join(f"{name}: {problem}" for name, problem in list(bad.items())[:MISSING_EXAMPLES])
        log.warning(
            "skipping %d of %d images (%d missing, %d unreadable), e.g. %s; all named in metrics/prepare.json",
            len(bad),
            n_referenced,
            len(missing),
            len(unreadable),
            named,
        )
    return report


# ----------------------------------------------------------------------------------------- splitting


def read_split_file(path: Path, known: set[int]) -> dict[str, list[int]]:
    if not path.is_file():
        raise CocoError(
            f"coco.prepare.split_file: no file at '{path}'; give a JSON "
            '{"train": [ids], "val": [...], "test": [...]} or null'
        )
    try:
        raw = json.loads(path.read_text())
        split = {name: [int(i) for i in raw.get(name, [])] for name in SPLITS}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise CocoError(
            f"coco.prepare.split_file: '{path}' must map train/val/test to lists of image ids ({exc})"
        ) from None
    if not split["train"] or not split["val"] or not split["test"]:
        raise CocoError(f"coco.prepare.split_file: '{path}' needs non-empty 'train', 'val' and 'test' lists")
    unknown = sorted(set().union(*split.values()) - known)
    if unknown:
        log.warning(
            "coco.prepare.split_file names %d image ids not in the annotations (or skipped), e.g. %s; ignoring them",
            len(unknown),
            unknown[:5],
        )
    return {name: [i for i in ids if i in known] for name, ids in split.items()}


def seeded_split(
    image_ids: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Shuffle the ids with the seed, then cut test, val and train off in that order (each non-empty test/train)."""
    ids = np.random.default_rng(seed).permutation(np.sort(np.asarray(image_ids)))
    n_test = max(1, round(test_fraction * len(ids)))
    n_val = max(1, round(val_fraction * len(ids)))
    if len(ids) - n_test - n_val < 1:
        raise CocoError(
            f"coco: {len(ids)} usable images leave none for training after val and test; add images "
            "or lower coco.prepare.val_fraction / coco.prepare.test_fraction"
        )
    return {
        "test": ids[:n_test].tolist(),
        "val": ids[n_test : n_test + n_val].tolist(),
        "train": ids[n_test + n_val :].tolist(),
    }


def cap(ids: list[int], limit: int | None, seed: int) -> list[int]:
    if limit is None or len(ids) <= limit:
        return ids
    return sorted(np.random.default_rng(seed).choice(ids, size=limit, replace=False).tolist())


# ---------------------------------------------------------------------------------------- the tables


def reference_table(
    captions: pd.DataFrame, images: pd.DataFrame, ids: list[int], known_concepts: set[str], concepts: Sequence[str]
) -> pd.DataFrame:
    """One row per image: its captions as references, and whether all concepts they name are known."""
    chosen = captions[captions["image_id"].isin(ids)]
    refs = chosen.groupby("image_id")["caption"].agg(list)
    table = images.set_index("image_id").loc[refs.index, ["file_name", "image_path"]].reset_index()
    table["references"] = refs.to_numpy()
    table["seen"] = [
        all(c in known_concepts for c in mentioned_concepts(" ".join(r), concepts)) for r in table["references"]
    ]
    return table


def choose_split(params: CocoPrepareParams, usable: list[int], seed: int) -> dict[str, list[int]]:
    """train/val/test image ids: the split file's, or seeded fractions; then the caps."""
    if params.split_file:
        split = read_split_file(Path(params.split_file), set(usable))
    else:
        split = seeded_split(usable, params.val_fraction, params.test_fraction, seed)
    split["train"] = cap(split["train"], params.max_train_images, seed)
    split["test"] = cap(split["test"], params.max_test_images, seed + 1)
    split["val"] = cap(split["val"], params.max_test_images, seed + 2)
    return split


def build_coco(params: CocoPrepareParams, seed: int) -> CocoData:
    """Read, check, split and tabulate a COCO-format caption dataset."""
    concepts = read_concepts(params.concepts_file)
    images, captions, caption_counts = read_annotations(Path(params.annotations))
    image_dir, n_referenced = Path(params.image_dir), len(images)
    # Every referenced image is opened (its header) before the split, so the split draws from usable images;
    # only the images the split keeps are then decoded in full (a scarce-data run keeps a few thousand of 118k).
    images, bad = check_images(images, image_dir, params.missing_images, decode=False)
    captions = captions[captions["image_id"].isin(images["image_id"])]
    usable = sorted(set(captions["image_id"]))  # images without any caption cannot be a pair or a test image
    split = choose_split(params, usable, seed)
    kept = images[images["image_id"].isin([i for ids in split.values() for i in ids])]
    decoded, undecodable = check_images(kept, image_dir, params.missing_images, decode=True)
    readable = set(decoded["image_id"])
    split = {name: [i for i in ids if i in readable] for name, ids in split.items()}
    image_counts = image_report(n_referenced, len(kept), bad | undecodable)
    if not split["train"] or not split["val"] or not split["test"]:
        counts = ", ".join(f"{len(split[name])} {name}" for name in ("train", "val", "test"))
        raise CocoError(
            f"coco: the split leaves {counts} images with captions and readable files; all three must be "
            "non-empty (add images, or raise coco.prepare.val_fraction / test_fraction)"
        )

    images = images.assign(image_path=[str(Path(params.image_dir) / name) for name in images["file_name"]])
    real_train = captions[captions["image_id"].isin(split["train"])].merge(images, on="image_id")
    real_train = real_train.sort_values(["image_id"], kind="stable").reset_index(drop=True)
    known = named_concepts(real_train["caption"], concepts)
    val = reference_table(captions, images, split["val"], known, concepts)
    test = reference_table(captions, images, split["test"], known, concepts)
    report = {
        "images": image_counts,
        "captions": caption_counts,
        "counts": {
            "real_train_pairs": len(real_train),
            "real_train_images": int(real_train["image_id"].nunique()),
            "val_images": len(val),
            "test_images": len(test),
            "concepts": len(concepts),
        },
        "concepts_in_real_train": len(known),
        "test_seen_fraction": float(test["seen"].mean()),
        "split": "file" if params.split_file else "seeded",
    }
    concept_table = pd.DataFrame({"concept": concepts, "kind": "class"})
    return CocoData(real_train, val, test, concept_table, report)
