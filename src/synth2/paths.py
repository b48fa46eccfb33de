"""Where every stage reads and writes, relative to the project root (the DVC workspace).

Part of the pipeline's one description with synth2.pipeline, which says which stage writes and reads
each of these paths; dvc.yaml is generated from the two (`python -m synth2.dvc_yaml`).
"""

from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")

# check_params: every stage depends on it, so params.yaml is validated before DVC touches any output
PARAMS_CHECK = REPORTS / "params_check.json"

# prepare: the shapes world, or (profile coco) the same tables read from a COCO-format dataset. Each image
# set is its own output directory, a table and (world) its pixels row for row, so that a stage depends on
# the sets it reads: a change of the human pairs leaves the unlabelled pool, and what reads it, as it was.
PREPARED = DATA / "prepared"
IMAGE_SETS = ("unlabeled_pool", "real_train", "val", "test")


def image_set(name: str) -> Path:
    return PREPARED / name


def image_table(name: str) -> Path:
    return image_set(name) / "table.parquet"


def image_pixels(name: str) -> Path:
    """world: uint8 [N, H, W, 3], row i the image of the table's row i; coco: none (images stay on disk)."""
    return image_set(name) / "pixels.safetensors"


POOL = image_table("unlabeled_pool")  # world: images over all combinations; coco: no rows
REAL_TRAIN = image_table("real_train")  # the scarce human pairs
VAL = image_table("val")  # held out for model selection and tuning, same columns as test
TEST = image_table("test")
TEXT_CORPUS = PREPARED / "text_corpus.parquet"  # world: the caption LM's knowledge; coco: no rows
CONCEPTS = PREPARED / "concepts.parquet"
PREPARE_METRICS = METRICS / "prepare.json"

# caption_lm
CAPTION_LM = MODELS / "caption_lm"
CAPTION_LM_METRICS = METRICS / "caption_lm.json"
CAPTION_LM_LOSS = PLOTS / "caption_lm_loss.csv"

# captions
CAPTIONS = DATA / "captions"
PROMPTED_CAPTIONS = CAPTIONS / "prompted.parquet"
UNPROMPTED_CAPTIONS = CAPTIONS / "unprompted.parquet"

# balance
SELECTIONS = DATA / "selections"
BALANCED = SELECTIONS / "balanced.parquet"
UNBALANCED = SELECTIONS / "unbalanced.parquet"
DIVERSITY_REPORT = METRICS / "diversity.json"

# image_encoder: the model (world: trained on the unlabelled pool only; coco: a pretrained snapshot)
IMAGE_ENCODER = MODELS / "image_encoder"
IMAGE_ENCODER_METRICS = METRICS / "image_encoder.json"
IMAGE_ENCODER_LOSS = PLOTS / "image_encoder_loss.csv"

# embed_images: the human pairs', validation and test images' embeddings, keyed by image id
EMBEDDINGS = DATA / "embeddings"
REAL_EMBEDDINGS = EMBEDDINGS / "real_train.safetensors"
VAL_EMBEDDINGS = EMBEDDINGS / "val.safetensors"
TEST_EMBEDDINGS = EMBEDDINGS / "test.safetensors"
EMBED_METRICS = METRICS / "embed_images.json"
# world: test images and their reconstructions; coco: real images with a caption each
IMAGE_ENCODER_SHEET = REPORTS / "image_encoder" / "sheet.png"

# prior
PRIOR = MODELS / "prior"
PRIOR_METRICS = METRICS / "prior.json"
PRIOR_LOSS = PLOTS / "prior_loss.csv"

# synthesize: one directory per selection, embeddings row-aligned with the captions
SYNTHETIC = DATA / "synthetic"
SELECTIONS_BY_NAME = {"balanced": BALANCED, "unbalanced": UNBALANCED}
SYNTHESIZE_METRICS = METRICS / "synthesize.json"
SYNTHETIC_SHEET = REPORTS / "synthesize" / "synthetic.png"
SYNTHETIC_SHEET_CAPTIONS = REPORTS / "synthesize" / "synthetic_captions.json"  # the sheet's captions in full
SYNTHETIC_EXAMPLES = REPORTS / "synthesize" / "examples.md"  # coco profile without a decoder


def synthetic_dir(selection: str) -> Path:
    return SYNTHETIC / selection


def synthetic_embeddings(selection: str) -> Path:
    return synthetic_dir(selection) / "embeddings.safetensors"


def synthetic_captions(selection: str) -> Path:
    return synthetic_dir(selection) / "captions.parquet"


# train_vlm (one directory per variant; synth2.pipeline.VARIANTS says what each trains on)
VLM = MODELS / "vlm"

# gates (one validation report per gate, and its page for people)
GATES = REPORTS / "gates"


def gate_report(name: str) -> Path:
    return GATES / f"{name}.json"


def gate_page(name: str) -> Path:
    return GATES / f"{name}.html"


# evaluate
EVAL_METRICS = METRICS / "evaluate.json"
EVAL_PLOT = PLOTS / "evaluate.csv"
EVAL_DIR = REPORTS / "evaluate"
EVAL_EXAMPLES = EVAL_DIR / "examples.md"
EVAL_CAPTIONS = EVAL_DIR / "captions.parquet"  # test captions of every variant
EVAL_PER_IMAGE = EVAL_DIR / "per_image.parquet"  # per-image scores, val and test


# self_improve: one round per key of params self_improve.rounds (none by default); the round's VLM in
# vlm_dir(round), which also holds the pseudo-caption pairs it was trained on (the next round reads them)
SELF_IMPROVE_METRICS = METRICS / "self_improve"
SELF_IMPROVE_REPORTS = REPORTS / "self_improve"
PSEUDO_PAIRS = "pseudo_pairs.parquet"  # image_id, caption, agreement, round (inside a round's vlm_dir)
PSEUDO_EMBEDDINGS = "pseudo_embeddings.safetensors"  # their images' embeddings, row for row


def self_improve_metrics(variant: str) -> Path:
    return SELF_IMPROVE_METRICS / f"{variant}.json"


def self_improve_report(variant: str) -> Path:
    """The round's per-image scores (evaluate's format), pool captions and loss curves."""
    return SELF_IMPROVE_REPORTS / variant


# report: one HTML page of the run (metrics, curves, diversity, synthetic samples, examples)
REPORT = REPORTS / "pipeline.html"


def vlm_dir(variant: str) -> Path:
    return VLM / variant


def vlm_metrics(variant: str) -> Path:
    return METRICS / "train_vlm" / f"{variant}.json"


def vlm_loss(variant: str) -> Path:
    return PLOTS / "train_vlm" / f"{variant}.csv"


# the pixel path (params pixel_space.variants; no stage by default): one set of outputs per variant.
# Its timings are no output: they differ from run to run (MLflow, the log, and `pixel_timings`, untracked).
def pixel_decoder_dir(variant: str) -> Path:
    return MODELS / "pixel_decoder" / variant


def pixel_decoder_metrics(variant: str) -> Path:
    return METRICS / "pixel_decoder" / f"{variant}.json"


def pixel_decoder_loss(variant: str) -> Path:
    return PLOTS / "pixel_decoder" / f"{variant}.csv"


def pixel_synthetic_dir(variant: str) -> Path:
    """The balanced selection's captions and their pixel-path embeddings (prior -> decoder -> encoder)."""
    return DATA / "pixel_synthetic" / variant


def pixel_synthesize_metrics(variant: str) -> Path:
    return METRICS / "pixel_synthesize" / f"{variant}.json"


def pixel_sheet(variant: str) -> Path:
    return REPORTS / "pixel_synthesize" / variant / "decoded.png"


def pixel_timings(variant: str) -> Path:
    """Untracked (not a DVC out, ignored by git): the pixel path's last measured timings, for people."""
    return REPORTS / "timings" / f"pixel_synthesize@{variant}.json"


def pixel_vlm_loss(variant: str) -> Path:
    return PLOTS / "pixel_vlm" / f"{variant}.csv"


def pixel_vlm_metrics(variant: str) -> Path:
    """The training summary, as train_vlm's."""
    return METRICS / "pixel_vlm" / f"{variant}.json"


def pixel_vlm_scores(variant: str) -> Path:
    """{split: {subset: scores}}: what evaluate's metrics hold for each variant."""
    return METRICS / "pixel_vlm" / f"{variant}.scores.json"


def pixel_vlm_per_image(variant: str) -> Path:
    """Per-image scores in evaluate's per_image format (variant = the pixel variant)."""
    return REPORTS / "pixel_vlm" / variant / "per_image.parquet"
