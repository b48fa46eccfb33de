"""Typed view of `params.yaml`.

One pydantic model per stage section, namespaced as in DVC's example-get-started. Loading validates the
whole file before any stage does work: an unknown key, a wrong type or an out-of-range value raises
`ParamsError` with one line naming the dotted key, the value given and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synth2.errors import Synth2Error

PARAMS_FILE = Path("params.yaml")

PosInt = Annotated[int, Field(gt=0)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
# Real-model profile: precision of a loaded checkpoint ("auto": bf16/fp16 on a GPU, fp32 on the CPU).
Precision = Literal["auto", "bf16", "fp16", "fp32"]


class ParamsError(Synth2Error):
    """params.yaml is missing, malformed or invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldParams(Section):
    image_size: Annotated[int, Field(ge=24, le=128)] = 32
    pool_size: PosInt = 20000
    real_train_size: PosInt = 2000
    text_corpus_size: PosInt = 50000
    test_per_combo: PosInt = 10
    test_refs: Annotated[int, Field(ge=3, le=5)] = 4  # at most one per human template
    holdout_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = 0.25
    zipf_a: Annotated[float, Field(ge=0.0, le=4.0)] = 1.0
    two_object_prob: Prob = 0.2


class CocoParams(Section):
    """The coco profile's data: COCO-format captions JSON and its image folder (local paths)."""

    annotations: str = "data/coco/annotations/captions_train2017.json"
    image_dir: str = "data/coco/train2017"
    # JSON {"train": [image ids], "val": [...], "test": [...]}; without it, seeded fractions split the images.
    split_file: str | None = None
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    # The scarce human pairs: at most this many training images (all their captions), seeded choice.
    max_train_images: PosInt | None = None
    max_test_images: PosInt | None = None
    # Images the JSON names but the folder lacks (or that cannot be read): counted, then skipped or fatal.
    missing_images: Literal["skip", "fail"] = "skip"
    # One concept per line: what the caption LLM is prompted with (COCO's 80 class names by default).
    concepts_file: str = "src/synth2/data/coco_classes.txt"

    @model_validator(mode="after")
    def _fractions_leave_training_images(self) -> CocoParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 (got {self.val_fraction} + {self.test_fraction})"
            )
        return self


class CaptionLMParams(Section):
    n_layer: PosInt = 2
    n_head: PosInt = 4
    n_embd: PosInt = 128
    steps: PosInt = 1500
    batch_size: PosInt = 64
    lr: PosFloat = 1e-3
    # Fraction of training examples shown without a concept prompt: they teach the LM its natural,
    # skewed caption distribution, which the unbalanced ablation samples.
    unprompted_fraction: Prob = 0.2
    # Context length: prompt + caption + eos (word tokens); longer examples are truncated.
    n_positions: Annotated[int, Field(ge=16, le=1024)] = 64
    # coco profile: the caption LLM (local directory or hub id), validated and snapshotted to models/caption_lm.
    pretrained: str = ""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> CaptionLMParams:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class CaptionsParams(Section):
    model_path: str = "models/caption_lm"
    prompt_template: str = "concepts: {concepts} caption:"
    unprompted_template: str = "caption:"
    n_prompted: PosInt = 6000
    n_unprompted: PosInt = 3000
    temperature: PosFloat = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    max_new_tokens: PosInt = 24
    batch_size: PosInt = 256
    # coco profile: wrap prompts in the tokenizer's chat template when it has one; load in this precision;
    # cut each caption to its first sentence and at most max_words words.
    chat_template: bool = True
    dtype: Precision = "auto"
    max_words: PosInt = 30

    @model_validator(mode="after")
    def _template_has_slot(self) -> CaptionsParams:
        if "{concepts}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{concepts}'")
        return self


class BalanceParams(Section):
    target_size: PosInt = 3000
    # MiniLM cosine above which a caption repeats an already-kept one. Captions differing only in
    # position or size reach 0.99+, so by default only captions that parse to the same attributes
    # count as near-duplicates; 0.97 then drops same-template synonym swaps (see balancing.py).
    near_duplicate_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.97
    near_duplicate_same_content: bool = True
    n_clusters: PosInt = 32
    min_words: PosInt = 3
    max_words: PosInt = 30
    # coco profile: keep only captions that name the concept they were prompted with.
    require_concept_mention: bool = True


class ImageEncoderParams(Section):
    embed_dim: PosInt = 64
    steps: PosInt = 2000
    batch_size: PosInt = 128
    lr: PosFloat = 2e-3
    # Weight of the image-gradient term: plain MSE on small objects encodes shape poorly.
    gradient_loss_weight: Annotated[float, Field(ge=0.0)] = 1.0
    probe_holdout: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    # coco profile: a pretrained vision model with CLIPVisionModelWithProjection's interface (its output
    # has `image_embeds`), the transformers class that loads it, and its image processor (default: the
    # model's own directory).
    model: str = "openai/clip-vit-base-patch32"
    model_class: str = "CLIPVisionModelWithProjection"
    image_processor: str | None = None
    dtype: Precision = "auto"


class PriorParams(Section):
    num_layers: PosInt = 2
    num_attention_heads: PosInt = 4
    attention_head_dim: PosInt = 32
    steps: PosInt = 3000
    batch_size: PosInt = 128
    lr: PosFloat = 1e-3
    num_train_timesteps: PosInt = 1000
    num_inference_steps: PosInt = 50
    # "trained": a PriorTransformer fitted on the real pairs only (the paper's fair setting);
    # "pipeline" (coco profile): a pretrained diffusers prior pipeline such as KandinskyV22PriorPipeline,
    # whose image embeddings must live in image_encoder.model's space.
    kind: Literal["trained", "pipeline"] = "trained"
    pipeline: str = "kandinsky-community/kandinsky-2-2-prior"
    guidance_scale: Annotated[float, Field(ge=0.0)] = 4.0
    dtype: Precision = "auto"


class SynthesizeParams(Section):
    batch_size: PosInt = 512
    timing_captions: PosInt = 512
    # coco profile: a diffusers decoder pipeline taking image embeddings (e.g. KandinskyV22Pipeline) for the
    # pixel-space timing path (prior -> decoder -> image encoder); without one only embedding space is timed.
    decoder: str | None = None
    decoder_steps: PosInt = 25
    decoder_image_size: Annotated[int, Field(ge=32, le=2048, multiple_of=8)] = 512
    dtype: Precision = "auto"


class TrainVLMParams(Section):
    prefix_length: PosInt = 4
    steps: PosInt = 1500
    batch_size: PosInt = 64
    lr: PosFloat = 1e-3
    # Fraction of each batch drawn from synthetic pairs in the synth variants.
    mix_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    freeze_lm: bool = False
    max_caption_tokens: PosInt = 24
    # coco profile: the VLM's causal LM (local directory or hub id); unset = the caption LLM snapshot.
    lm_path: str | None = None
    # With freeze_lm, train the top N transformer blocks of the LM as well (0: the mapper only).
    unfreeze_top_layers: Annotated[int, Field(ge=0)] = 0
    # Autocast precision on a GPU ("fp32": none); the CPU always trains in fp32.
    mixed_precision: Precision = "auto"

    @model_validator(mode="after")
    def _unfreeze_needs_frozen_lm(self) -> TrainVLMParams:
        if self.unfreeze_top_layers and not self.freeze_lm:
            raise ValueError("unfreeze_top_layers needs freeze_lm: true (an unfrozen LM trains every layer already)")
        return self


class EvaluateParams(Section):
    batch_size: PosInt = 256
    n_examples: PosInt = 24


class TrackingParams(Section):
    experiment: str = "synth2"
    # Relative paths are resolved against the project root; MLFLOW_TRACKING_URI overrides this.
    tracking_uri: str = "sqlite:///mlflow.db"
    registered_model: str = "synth2-vlm"
    champion_metric: str = "unseen.attr_all"


class GateParams(Section):
    caption_min_words: PosInt = 3
    caption_max_words: PosInt = 30
    max_duplicate_fraction: Prob = 0.95
    # Raw LM samples may hold a few too-short or odd captions (balance filters them); the gate stops
    # the pipeline when fewer than this fraction are well-formed. Balanced captions must all be.
    caption_min_valid_fraction: Prob = 0.9
    balanced_min_concept_coverage: Prob = 0.9
    balanced_max_concept_ratio: PosFloat = 10.0
    # Synthetic norms must lie in [min*(1-slack), max*(1+slack)] of the real embeddings' norms.
    embedding_norm_slack: PosFloat = 0.5


class OrchestrationParams(Section):
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    retry_delay_s: Annotated[float, Field(ge=0.0)] = 5.0


class Params(Section):
    seed: Annotated[int, Field(ge=0)] = 0
    # world: the embedded shapes world; coco: COCO-format data and pretrained Hugging Face models.
    profile: Literal["world", "coco"] = "world"
    # Where models run: auto (a GPU when there is one), cpu, cuda or cuda:N.
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")] = "auto"
    world: WorldParams = WorldParams()
    coco: CocoParams = CocoParams()
    caption_lm: CaptionLMParams = CaptionLMParams()
    captions: CaptionsParams = CaptionsParams()
    balance: BalanceParams = BalanceParams()
    image_encoder: ImageEncoderParams = ImageEncoderParams()
    prior: PriorParams = PriorParams()
    synthesize: SynthesizeParams = SynthesizeParams()
    train_vlm: TrainVLMParams = TrainVLMParams()
    evaluate: EvaluateParams = EvaluateParams()
    tracking: TrackingParams = TrackingParams()
    gates: GateParams = GateParams()
    orchestration: OrchestrationParams = OrchestrationParams()

    @model_validator(mode="after")
    def _profile_fits(self) -> Params:
        if self.profile == "coco" and "attr_" in self.tracking.champion_metric:
            raise ValueError(
                f"tracking.champion_metric '{self.tracking.champion_metric}' is a shapes-world metric; "
                "the coco profile scores bleu4 and cider (e.g. overall.cider)"
            )
        if self.profile == "world" and self.prior.kind == "pipeline":
            raise ValueError(
                "prior.kind 'pipeline' needs profile: coco (a pretrained prior speaks CLIP, not the world's encoder)"
            )
        return self


def _describe(error: dict, path: Path) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<top level>"
    given = error.get("input")
    if not error["loc"] and error["type"] == "value_error":  # a check across sections names its keys itself
        return f"{path}: " + error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}' (value {given!r}); remove it or fix its spelling"
    allowed = error["msg"].removeprefix("Value error, ")
    return f"{path}: invalid value for '{key}': {given!r} ({allowed})"


def parse_params(raw: object, path: Path = PARAMS_FILE) -> Params:
    """Validate an already-parsed YAML document."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ParamsError(_describe(errors[0], path) + more) from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; every failure is a one-line `ParamsError`."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the project root, or copy params.yaml from the repository")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_params(raw, path)
