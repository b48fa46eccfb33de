"""The pipeline, described once: every stage's command, inputs, outputs, params keys and variants.

dvc.yaml is generated from this description and synth2.paths (`make dvc.yaml`, i.e. `python -m
synth2.dvc_yaml`): the data deps, params and outs below, and as code deps every module the stage's command
can run, read from its imports. tests/test_dvc_yaml.py fails when the committed dvc.yaml differs from what
the description generates, so the two cannot drift. The code reads the same description: a stage reading
a missing input is told which stage writes it (`producer`), gates take their thresholds from `GATES`,
train_vlm, evaluate and the study take the variants from `VARIANTS`.

A stage's outputs cannot change because of this module or synth2.paths without dvc.yaml changing too
(a path, a params key, a variant's data), and DVC re-runs a stage whose dvc.yaml entry changed: so
neither module is a code dep of the stages, and editing one stage's entry re-runs that stage only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synth2 import paths

PROFILES = ("world", "coco")


@dataclass(frozen=True)
class Plot:
    path: Path
    x: str | None = None
    y: str | None = None
    template: str | None = None


@dataclass(frozen=True)
class Stage:
    """One DVC stage: `python -m synth2.stages.<module> <args>`.

    deps are other stages' outputs (paths, or `${item.KEY}` of a foreach); params are params.yaml keys,
    `${profile}.<stage>` for the profile's own subsection; metrics and plots are not cached (committed).
    A foreach stage runs once per key of `foreach` (`${key}` and `${item.KEY}` in its fields). `foreach`
    may instead name a mapping of params.yaml (`"${self_improve.rounds}"`): DVC makes one stage per key
    of its value there (`${key}`, and `${item}` its value), none while it is empty.
    """

    name: str
    doc: str
    module: str
    args: tuple[str, ...] = ()
    deps: tuple[Path | str, ...] = ()
    params: tuple[str, ...] = ()
    outs: tuple[Path | str, ...] = ()
    metrics: tuple[Path | str, ...] = ()
    plots: tuple[Plot, ...] = ()
    foreach: dict[str, dict[str, str]] | str = field(default_factory=dict)

    def addresses(self, params: dict | None = None) -> dict[str, dict[str, str]]:
        """{DVC address: template values}: `name@key` per foreach key, else the name alone. A foreach over
        a params mapping expands over its value in `params` (params.yaml's document; none without it)."""
        if isinstance(self.foreach, str):
            items = params_value(params or {}, self.foreach)
            return {f"{self.name}@{key}": {"key": key, "item": str(item)} for key, item in items.items()}
        if not self.foreach:
            return {self.name: {}}
        return {
            f"{self.name}@{key}": {"key": key} | {f"item.{k}": v for k, v in item.items()}
            for key, item in self.foreach.items()
        }


def params_value(params: dict, template: str) -> dict:
    """The mapping `${a.b}` names in params.yaml's document; empty when it is absent or no mapping."""
    node: object = params
    for part in template.removeprefix("${").removesuffix("}").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


# ------------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """A VLM trained by train_vlm: the real human pairs plus, optionally, one synthetic selection."""

    name: str
    selection: str | None  # the synthetic selection (synthesize's output) added to the real pairs
    doc: str


VARIANTS = (
    Variant("baseline", None, "real human pairs only"),
    Variant("synth", "balanced", "real + balanced synthetic pairs"),
    Variant("synth_unbalanced", "unbalanced", "real + unbalanced synthetic pairs (the ablation)"),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)
BASELINE = "baseline"
SELECTION_OF = {v.name: v.selection for v in VARIANTS}
# The paired differences a study reports: synthetic pairs against none; balanced against unbalanced.
COMPARISONS = (("synth - baseline", "synth", "baseline"), ("balanced - unbalanced", "synth", "synth_unbalanced"))

# Self-improvement rounds: variant synth_rN -> the variant whose VLM captions the pool (params.yaml).
ROUNDS_PARAM = "self_improve.rounds"
ROUND_ZERO = "synth"  # the VLM the first round starts from

# The pixel path's variants (params pixel_space.variants; stages pixel_*): a study that finds one in its
# experiments reports it against the variant it differs from in the path of its synthetic data only.
PIXEL_COMPARISONS = (("synth_pixel - synth", "synth_pixel", "synth"),)

# What evaluate scores: every variant on both splits, overall and on seen / unseen concepts.
SPLITS = ("val", "test")
SUBSETS = ("overall", "seen", "unseen")

# ---------------------------------------------------------------------------------------------- gates

# The params.gates keys each gate checks against (its report records them).
GATES = {
    "pool": (),
    "real": (),
    "captions": ("caption_min_words", "caption_max_words", "max_duplicate_fraction", "caption_min_valid_fraction"),
    "balanced": (
        "caption_min_words",
        "caption_max_words",
        "balanced_min_concept_coverage",
        "balanced_max_concept_ratio",
    ),
    "synthetic": ("embedding_norm_slack",),
}


def _gate(name: str, doc: str, deps: tuple[Path, ...], params: tuple[str, ...] = ()) -> Stage:
    keys = params + tuple(f"gates.{key}" for key in GATES[name])
    return Stage(f"gate_{name}", doc, "gate", (name,), deps, keys, (paths.gate_report(name), paths.gate_page(name)))


# --------------------------------------------------------------------------------------------- stages

# The params.yaml mapping whose keys switch the pixel path's stages on, each naming the selection whose
# synthetic embeddings go through pixels (synth2.params.PixelSpaceParams).
PIXEL_VARIANTS = "${pixel_space.variants}"
# What every VLM's training reads besides its data (train_vlm's and the pixel variant's alike).
VLM_PARAMS = (
    "seed",
    "profile",
    "device",
    "train_vlm.prefix_length",
    "train_vlm.steps",
    "train_vlm.batch_size",
    "train_vlm.lr",
    "train_vlm.freeze_lm",
    "train_vlm.unfreeze_top_layers",
    "train_vlm.max_caption_tokens",
    "train_vlm.mixed_precision",
    "${profile}.train_vlm",
)

# What every VLM's training reads besides its synthetic pairs, and what scoring a VLM reads (evaluate's,
# the pixel variant's and every round's).
VLM_TRAINING_DEPS = (paths.CAPTION_LM, paths.REAL_TRAIN, paths.REAL_EMBEDDINGS)
EVALUATION_DEPS = (paths.VAL, paths.TEST, paths.VAL_EMBEDDINGS, paths.TEST_EMBEDDINGS)

PREPARED_OUTS = (*(paths.image_set(s) for s in paths.IMAGE_SETS), paths.TEXT_CORPUS, paths.CONCEPTS)

STAGES = (
    Stage(
        "check_params",
        "Validates the whole params.yaml first: DVC deletes a stage's outputs before running it, so a params "
        "mistake must stop the pipeline before any other stage starts. Every stage depends on its output, "
        "which holds only the profile: a valid edit of one key re-runs nothing else.",
        "check_params",
        deps=(Path("params.yaml"),),
        outs=(paths.PARAMS_CHECK,),
    ),
    Stage(
        "prepare",
        "The data: each image set (table + pixels), the text corpus and the concepts are separate outputs, so "
        "a stage depends on the sets it reads. coco: read from the COCO-format files its params name.",
        "prepare",
        deps=(Path("src/synth2/data"),),
        params=("seed", "profile", "${profile}.prepare"),
        outs=PREPARED_OUTS,
        metrics=(paths.PREPARE_METRICS,),
    ),
    # Two gates on the prepared data: the image encoder waits for the pool's only, so that a change of the
    # human pairs (which changes the real gate's report) does not re-train it.
    _gate(
        "pool",
        "GX: the unlabelled pool (attributes in vocabulary, one image per row).",
        (paths.image_set("unlabeled_pool"),),
        ("profile",),
    ),
    _gate(
        "real",
        "GX: the human pairs, validation, test, text corpus and concepts.",
        (*(paths.image_set(s) for s in ("real_train", "val", "test")), paths.TEXT_CORPUS, paths.CONCEPTS),
        ("profile",),
    ),
    Stage(
        "caption_lm",
        "The caption LLM: world: a small GPT-2 trained on the text corpus (and, with "
        "world.caption_lm.human_style_fraction > 0, on the human captions behind a style token, so it re-runs "
        "when the human pairs change); coco: a pretrained LLM, snapshotted.",
        "caption_lm",
        deps=(paths.TEXT_CORPUS, paths.REAL_TRAIN, paths.gate_report("real")),
        params=(
            "seed",
            "profile",
            "${profile}.caption_lm",
            "captions.prompt_template",
            "captions.unprompted_template",
            "compute.train_processes",
        ),
        outs=(paths.CAPTION_LM,),
        metrics=(paths.CAPTION_LM_METRICS,),
        plots=(Plot(paths.CAPTION_LM_LOSS, x="step", y="loss"),),
    ),
    Stage(
        "captions",
        "Sampled captions for evenly cycled concept prompts, and unprompted samples (the LM's own skew).",
        "captions",
        deps=(paths.CAPTION_LM, paths.CONCEPTS, paths.REAL_TRAIN),  # coco: few-shot examples
        params=("seed", "profile", "device", "captions", "${profile}.captions", "compute.shards"),
        outs=(paths.CAPTIONS,),
    ),
    _gate("captions", "GX: no nulls, length bounds, duplicate share.", (paths.CAPTIONS,), ("profile",)),
    Stage(
        "balance",
        "Normalise, dedupe, label, balance over concepts x MiniLM clusters; an unbalanced selection of the same "
        "size for the ablation; diversity before and after.",
        "balance",
        deps=(paths.CAPTIONS, paths.CONCEPTS, paths.gate_report("captions")),
        params=("seed", "profile", "balance", "${profile}.balance", "compute.shards"),
        outs=(paths.SELECTIONS,),
        metrics=(paths.DIVERSITY_REPORT,),
    ),
    _gate(
        "balanced",
        "GX: unique, concept coverage and balance.",
        (paths.SELECTIONS, paths.CONCEPTS),
        ("profile",),
    ),
    Stage(
        "image_encoder",
        "The image embedding every later stage works in: world: an autoencoder trained on the unlabelled pool "
        "only (a change of the human pairs never retrains it); coco: a pretrained vision model, snapshotted.",
        "image_encoder",
        deps=(paths.image_set("unlabeled_pool"), paths.gate_report("pool")),
        params=("seed", "profile", "device", "${profile}.image_encoder", "compute.train_processes"),
        outs=(paths.IMAGE_ENCODER,),
        metrics=(paths.IMAGE_ENCODER_METRICS,),
        plots=(Plot(paths.IMAGE_ENCODER_LOSS, x="step", y="loss"),),
    ),
    Stage(
        "embed_images",
        "The human pairs', validation and test images embedded with the image encoder, keyed by image id.",
        "embed_images",
        deps=(
            paths.IMAGE_ENCODER,
            *(paths.image_set(s) for s in ("real_train", "val", "test")),
            paths.gate_report("real"),
        ),
        params=("seed", "profile", "device", "${profile}.image_encoder"),
        outs=(paths.REAL_EMBEDDINGS, paths.VAL_EMBEDDINGS, paths.TEST_EMBEDDINGS, paths.IMAGE_ENCODER_SHEET.parent),
        metrics=(paths.EMBED_METRICS,),
    ),
    Stage(
        "prior",
        "diffusers PriorTransformer: MiniLM caption embedding -> image embedding, trained on the human pairs "
        "only (coco: or a pretrained prior pipeline, snapshotted).",
        "prior",
        deps=(paths.REAL_TRAIN, paths.REAL_EMBEDDINGS),
        params=("seed", "profile", "device", "prior", "${profile}.prior", "compute.train_processes"),
        outs=(paths.PRIOR,),
        metrics=(paths.PRIOR_METRICS,),
        plots=(Plot(paths.PRIOR_LOSS, x="step", y="loss"),),
    ),
    Stage(
        "synthesize",
        "One image embedding per selected caption, from the prior; the profile's report (held-out pairs, "
        "embedding- vs pixel-space timing in MLflow and the log, decoded samples).",
        "synthesize",
        deps=(paths.PRIOR, paths.IMAGE_ENCODER, paths.SELECTIONS, paths.REAL_TRAIN, paths.gate_report("balanced")),
        params=(
            "seed",
            "profile",
            "synthesize",
            "prior.num_inference_steps",
            "${profile}.prior",
            "${profile}.synthesize",
            "compute.shards",
        ),
        outs=(paths.SYNTHETIC, paths.SYNTHETIC_SHEET.parent),
        metrics=(paths.SYNTHESIZE_METRICS,),
    ),
    _gate(
        "synthetic",
        "GX: finite, right dimension, norms within the real range.",
        (paths.SYNTHETIC, paths.REAL_EMBEDDINGS),
        ("profile",),
    ),
    Stage(
        "train_vlm",
        "The VLM variants: one code path, settings and step budget; only the data differ. Each item names the "
        "pairs it adds to the real ones, the gate they passed and the params only it reads: the baseline "
        "depends on no synthetic data and no synthetic-data param, so changing them never re-trains it.",
        "train_vlm",
        args=("${key}",),
        deps=(*VLM_TRAINING_DEPS, "${item.pairs}", "${item.gate}"),
        params=(
            *VLM_PARAMS,
            "${item.params}",
            "compute.train_processes",
        ),
        outs=(paths.vlm_dir("${key}"),),
        metrics=(paths.vlm_metrics("${key}"),),
        plots=(Plot(paths.vlm_loss("${key}"), x="step", y="loss"),),
        foreach={
            v.name: {
                "pairs": str(paths.synthetic_dir(v.selection) if v.selection else paths.REAL_EMBEDDINGS),
                "gate": str(paths.gate_report("synthetic" if v.selection else "real")),
                "params": "train_vlm.synthetic" if v.selection else "seed",
            }
            for v in VARIANTS
        },
    ),
    Stage(
        "evaluate",
        "Greedy captions of every validation and test image by every variant; CIDEr, BLEU-4, attribute "
        "accuracy; gains over the baseline; per-image scores; the champion chosen on validation.",
        "evaluate",
        deps=(
            *(paths.vlm_dir(v) for v in VARIANT_NAMES),
            *EVALUATION_DEPS,
        ),
        params=(
            "seed",
            "profile",
            "device",
            "evaluate",
            "train_vlm.max_caption_tokens",
            "tracking.champion_metric",
            "compute.shards",
        ),
        outs=(paths.EVAL_DIR,),
        metrics=(paths.EVAL_METRICS,),
        plots=(Plot(paths.EVAL_PLOT, x="value", y="name", template="bar_horizontal"),),
    ),
    # The pixel path (README "Embedding space vs pixel space"): stages only for the variants that
    # params.yaml's pixel_space.variants lists, none by default.
    Stage(
        "pixel_decoder",
        "The pixel path's diffusion decoder (world): a small UNet2DModel trained on the unlabelled pool's images "
        "and their image-encoder embeddings to turn an image embedding into pixels.",
        "pixel_decoder",
        args=("${key}",),
        deps=(paths.image_set("unlabeled_pool"), paths.IMAGE_ENCODER, paths.gate_report("pool")),
        params=("seed", "profile", "pixel_space.decoder"),  # the world's pixel path runs on the CPU
        outs=(paths.pixel_decoder_dir("${key}"),),
        metrics=(paths.pixel_decoder_metrics("${key}"),),
        plots=(Plot(paths.pixel_decoder_loss("${key}"), x="step", y="loss"),),
        foreach=PIXEL_VARIANTS,
    ),
    Stage(
        "pixel_synthesize",
        "The selection's synthetic embeddings (synthesize's; synth_pixel: the balanced one) through decoder -> "
        "pixels -> image encoder; prior -> embedding timed against prior -> decoder -> pixels -> image encoder "
        "on the same captions (MLflow, the log and an untracked report: never an output).",
        "pixel_synthesize",
        args=("${key}",),
        deps=(
            paths.pixel_decoder_dir("${key}"),
            paths.PRIOR,
            paths.IMAGE_ENCODER,
            paths.synthetic_dir("${item}"),
            paths.gate_report("synthetic"),
        ),
        params=(
            "seed",
            "profile",
            "synthesize",
            "prior.num_inference_steps",
            "pixel_space.variants.${key}",
            "pixel_space.num_inference_steps",
            "pixel_space.batch_size",
        ),
        outs=(paths.pixel_synthetic_dir("${key}"), paths.pixel_sheet("${key}").parent),
        metrics=(paths.pixel_synthesize_metrics("${key}"),),
        foreach=PIXEL_VARIANTS,
    ),
    Stage(
        "pixel_vlm",
        "The VLM trained on the real pairs + the pixel path's re-encoded embeddings of the balanced selection, "
        "with train_vlm's code and settings (as synth, but for the data), and scored with evaluate's code.",
        "pixel_vlm",
        args=("${key}",),
        deps=(
            *VLM_TRAINING_DEPS,
            paths.pixel_synthetic_dir("${key}"),
            *EVALUATION_DEPS,
        ),
        params=(*VLM_PARAMS, "train_vlm.synthetic", "evaluate.batch_size", "compute.train_processes", "compute.shards"),
        outs=(paths.vlm_dir("${key}"), paths.pixel_vlm_per_image("${key}").parent),
        metrics=(paths.pixel_vlm_metrics("${key}"), paths.pixel_vlm_scores("${key}")),
        plots=(Plot(paths.pixel_vlm_loss("${key}"), x="step", y="loss"),),
        foreach=PIXEL_VARIANTS,
    ),
    Stage(
        "self_improve",
        "Self-improvement rounds, one stage per key of self_improve.rounds (none by default): the previous "
        "VLM captions a seeded share of the unlabelled pool; a filter that reads no ground truth keeps the "
        "captions whose prior embedding agrees with their image's; the prior retrains on the human plus kept "
        "pairs and re-synthesises the balanced captions; the round's VLM trains as train_vlm@synth does, the "
        "kept pairs tagged real; it is scored on validation and test as evaluate scores. Each round declares "
        "its own rounds key, so adding a round re-runs no earlier one.",
        "self_improve",
        args=("${key}",),
        deps=(
            paths.vlm_dir("${item}"),
            paths.image_set("unlabeled_pool"),
            paths.IMAGE_ENCODER,
            paths.PRIOR,
            *VLM_TRAINING_DEPS,
            paths.BALANCED,
            paths.gate_report("balanced"),
            *EVALUATION_DEPS,
        ),
        params=(
            "seed",
            "profile",
            "device",
            f"{ROUNDS_PARAM}.${{key}}",
            "self_improve.pool_size",
            "self_improve.mode",
            "self_improve.filter",
            "self_improve.keep_fraction",
            "prior",
            "${profile}.prior",
            "train_vlm",
            "${profile}.train_vlm",
            "evaluate.batch_size",
            "compute.shards",
        ),
        outs=(paths.vlm_dir("${key}"), paths.self_improve_report("${key}")),
        metrics=(paths.self_improve_metrics("${key}"),),
        foreach="${" + ROUNDS_PARAM + "}",
    ),
    Stage(
        "report",
        "One HTML page of the run for people: metrics, curves, diversity, decoded synthetic samples, examples, "
        "the gates (linked to their pages).",
        "report",
        deps=(
            paths.EVAL_METRICS,
            paths.DIVERSITY_REPORT,
            paths.CAPTION_LM_LOSS,
            paths.IMAGE_ENCODER_LOSS,
            paths.PRIOR_LOSS,
            paths.vlm_loss("baseline").parent,
            paths.SYNTHETIC_SHEET.parent,
            paths.EVAL_DIR,
            *(paths.gate_report(gate) for gate in GATES),
        ),
        params=("seed", "profile"),
        outs=(paths.REPORT,),
    ),
)
STAGE_BY_NAME = {stage.name: stage for stage in STAGES}


def _expand(value: Path | str, values: dict[str, str]) -> Path:
    text = str(value)
    for key, replacement in values.items():
        text = text.replace("${" + key + "}", replacement)
    return Path(text)


def outputs(params: dict | None = None) -> dict[Path, str]:
    """{every output path, foreach items expanded: the DVC address of the stage that writes it}; a foreach
    over a params mapping expands over `params` (params.yaml's document), else over nothing."""
    written = {}
    for stage in STAGES:
        for address, values in stage.addresses(params).items():
            for out in (*stage.outs, *stage.metrics, *(plot.path for plot in stage.plots)):
                written[_expand(out, values)] = address
    return written


def _workspace_params() -> dict:
    """params.yaml of the working directory, for the stages it enables; {} when it is missing or unreadable
    (the params check names what is wrong with it)."""
    try:
        document = yaml.safe_load(Path("params.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return document if isinstance(document, dict) else {}


def producer(path: Path | str) -> str:
    """The stage that writes `path` (a declared output or a file inside one): what to run when it is missing.
    Outputs of stages that params.yaml enables (self-improvement rounds) are found from the working
    directory's params.yaml."""
    path = Path(path)
    written = outputs(_workspace_params())
    for candidate in (path, *path.parents):
        if candidate in written:
            return written[candidate]
    raise KeyError(f"{path} is no output of a stage of synth2.pipeline")
