"""The two profiles behind one interface: what differs between the shapes world and COCO with real models.

Every stage runs the same code in both profiles and asks its profile for the few operations that differ
through one hook module per stage: `load_hooks(params, "prepare")` imports
`synth2/profiles/<params.profile>/prepare.py`. A hook module holds what its stage needs of the profile and
nothing else, so dvc.yaml declares `src/synth2/profiles/${profile}/STAGE.py` for the stage that calls it
(synth2.dvc_yaml reads the call) and editing one profile's hook for one stage re-runs that stage and what
depends on its outputs only. No stage or library module looks at `params.profile` itself.

The hook modules of both profiles (world/ and coco/) define the same names:

| hook module | stage | what |
|---|---|---|
| check_params | check_params | `check_params(params)`: values the profile cannot honour, one ParamsError line |
| prepare | prepare | `prepare(params) -> PreparedData` |
| gate | gate_* | `pool_tables`, `real_tables` (-> list[Table]); `LABEL_COLUMNS`, `CONCEPT_KIND` |
| caption_lm | caption_lm | `make_caption_lm(params) -> CaptionLM` |
| captions | captions | `caption_generator(params) -> CaptionGenerator` |
| balance | balance | `caption_labellers(params) -> CaptionLabellers` |
| image_encoder | image_encoder | `make_image_encoder(params) -> ImageEncoder` |
| embed_images | embed_images | `embed_images(params) -> EmbeddedImages` |
| prior | prior, synthesize | `prior_pipeline(params) -> PriorPipeline | None` |
| synthesize | synthesize | `SELECTION_COLUMNS`; `synthesis_report(params, balanced, synthesize) -> SynthesisReport` |
| train_vlm | train_vlm | `vlm_lm(params) -> Path` |
| evaluate | evaluate | `TEST_COLUMNS`, `EXAMPLE_KEY`; `check_champion(params, val)`; `score(predictions, table)` |
| report | report (and `synth2 results`) | `RESULT_COLUMNS`; `data_description(params)`; `figures(params)` |

Hooks import what they use inside the function where the import is heavy (torch, transformers).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from synth2.balancing import Labeller
    from synth2.params import Params

Synthesizer = Callable[[list[str], int], "np.ndarray"]  # captions, seed -> image embeddings [N, D]


def load_hooks(params: Params, stage: str) -> ModuleType:
    """The hook module of `stage` in `params.profile` (validated by synth2.params to be world or coco)."""
    return importlib.import_module(f"synth2.profiles.{params.profile}.{stage}")


@dataclass
class PreparedData:
    """What `prepare` writes under data/prepared/: per image set a table and (world) its pixels, row for
    row; the text corpus and the concepts; a summary metric."""

    image_sets: dict[str, pd.DataFrame]
    pixels: dict[str, np.ndarray]
    text_corpus: pd.DataFrame
    concepts: pd.DataFrame
    summary: dict[str, Any]


@dataclass
class CaptionLM:
    """The caption generator `caption_lm` saves, with its metrics and (when trained here) its losses."""

    model: Any
    tokenizer: Any
    metrics: dict[str, Any]
    losses: list[float] = field(default_factory=list)


@dataclass
class CaptionGenerator:
    """prompts, seed -> one cleaned caption per prompt; `provenance` goes into every row it writes."""

    generate: Callable[[list[str], int], list[str]]
    provenance: dict[str, Any]


@dataclass
class CaptionLabellers:
    """How balancing labels captions, and the concepts diversity is measured against."""

    prompted: Labeller
    unprompted: Labeller
    concepts: list[str]
    unlabelled_hint: str | None = None  # the error hint when no prompted caption gets a label


@dataclass
class ImageEncoder:
    """What `image_encoder` writes: the model (by `save(directory)`), metrics and (when trained) losses."""

    save: Callable[[Path], None]
    metrics: dict[str, Any]
    losses: list[float] = field(default_factory=list)


@dataclass
class EmbeddedImages:
    """What `embed_images` writes: embeddings per file, metrics, a contact sheet."""

    embeddings: dict[Path, tuple[np.ndarray, np.ndarray]]  # output file -> (image ids, embeddings)
    metrics: dict[str, Any]
    sheet: tuple[np.ndarray, list[str], int]  # images [N, H, W, 3], a caption each, columns


@dataclass(frozen=True)
class PriorPipeline:
    """A pretrained diffusers prior pipeline used instead of training the PriorTransformer."""

    source: str  # local directory or hub id
    param: str  # the params key that names it, for error messages
    guidance_scale: float
    dtype: str


@dataclass
class SynthesisReport:
    """The profile's part of `synthesize`: metrics for DVC, timings for MLflow (they differ run to run)."""

    metrics: dict[str, Any]
    timings: dict[str, Any]
