"""The two profiles behind one interface: what differs between the shapes world and COCO with real models.

Every stage runs the same code in both profiles and asks for its profile once, `load_profile(params)`,
for the few operations that differ: preparing the data, making the caption LM, generating and cleaning
captions, labelling them for balancing, the real-data gate's tables, embedding images, the synthesis
report, the VLM's LM, and scoring captions. Loading params.yaml asks it which values it cannot honour
(`check_params`). No stage or library module looks at `params.profile`.

A profile is a module (`world.py`, `coco.py`) implementing `Profile`. Its hooks import what they use
inside the function, so a stage depends only on the code of the hooks it calls; DVC declares
`src/synth2/profiles/${profile}.py` for every stage, and tests/test_dvc_deps.py checks the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from synth2.balancing import Labeller
    from synth2.gates import Table
    from synth2.params import Params

Synthesizer = Callable[[list[str], int], "np.ndarray"]  # captions, seed -> image embeddings [N, D]


@dataclass
class PreparedData:
    """What `prepare` writes under data/prepared/: tables (Parquet), arrays (safetensors), a summary metric."""

    tables: dict[str, pd.DataFrame]
    arrays: dict[str, np.ndarray]
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
class EncodedImages:
    """What `image_encoder` writes: the model (by `save(directory)`), embeddings per file, metrics, a sheet."""

    save: Callable[[Path], None]
    embeddings: dict[Path, tuple[np.ndarray, np.ndarray]]  # output file -> (image ids, embeddings)
    metrics: dict[str, Any]
    sheet: tuple[np.ndarray, list[str], int]  # images [N, H, W, 3], a caption each, columns
    losses: list[float] = field(default_factory=list)


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


class Profile(Protocol):
    """The interface `world.py` and `coco.py` implement (module-level constants and functions)."""

    TEST_COLUMNS: tuple[str, ...]  # what evaluate reads from the test and validation tables
    EXAMPLE_KEY: str  # the test-table column that names an image in example tables
    SELECTION_COLUMNS: tuple[str, ...]  # what synthesize reads from the caption selections
    CONCEPT_KIND: str  # the kind of concept balancing balances over
    LABEL_COLUMNS: tuple[str, ...]  # labels the balanced gate requires besides the concept
    RESULT_COLUMNS: tuple[tuple[str, str], ...]  # (metric, heading) of `synth2 results`

    def check_params(self, params: Params, val: pd.DataFrame | None = None) -> None:
        """Raise ParamsError (one line naming the key and what would work) for a value the profile cannot
        honour, e.g. a champion metric it never scores. synth2.params calls it on every load, before any
        stage works; with `val`, the validation table prepare wrote, it also checks what needs the data
        (a champion metric of a subset with no validation image)."""
        ...

    def prepare(self, params: Params) -> PreparedData: ...

    def make_caption_lm(self, params: Params) -> CaptionLM: ...

    def caption_generator(self, params: Params) -> CaptionGenerator: ...

    def caption_labellers(self, params: Params) -> CaptionLabellers: ...

    def real_gate_tables(self, params: Params) -> list[Table]: ...

    def encode_images(self, params: Params) -> EncodedImages: ...

    def prior_pipeline(self, params: Params) -> PriorPipeline | None: ...

    def synthesis_report(self, params: Params, balanced: pd.DataFrame, synthesize: Synthesizer) -> SynthesisReport: ...

    def vlm_lm(self, params: Params) -> Path: ...

    def score(self, predictions: list[str], table: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]: ...

    def data_description(self, params: Params) -> str: ...


def load_profile(params: Params) -> Profile:
    """The module of `params.profile` (validated by synth2.params to be one of the modules here)."""
    return importlib.import_module(f"synth2.profiles.{params.profile}")  # type: ignore[return-value]
