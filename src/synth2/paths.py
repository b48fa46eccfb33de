"""Where every stage reads and writes, relative to the project root (the DVC workspace).

`dvc.yaml` declares exactly these paths; keep the two in step.
"""

from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")

# check_params: every stage depends on it, so params.yaml is validated before DVC touches any output
PARAMS_CHECK = REPORTS / "params_check.json"

# prepare: the shapes world, or (profile coco) the same tables read from a COCO-format dataset
PREPARED = DATA / "prepared"
PIXELS = PREPARED / "pixels.safetensors"  # world: one uint8 array [N, H, W, 3]; tables reference rows by image_id
POOL = PREPARED / "unlabeled_pool.parquet"  # world only
REAL_TRAIN = PREPARED / "real_train.parquet"
TEXT_CORPUS = PREPARED / "text_corpus.parquet"  # world only: the caption LM's knowledge
TEST = PREPARED / "test.parquet"
CONCEPTS = PREPARED / "concepts.parquet"
VAL = PREPARED / "val.parquet"  # held out for model selection and tuning, same columns as test
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

# image_encoder
IMAGE_ENCODER = MODELS / "image_encoder"
EMBEDDINGS = DATA / "embeddings"
REAL_EMBEDDINGS = EMBEDDINGS / "real_train.safetensors"
VAL_EMBEDDINGS = EMBEDDINGS / "val.safetensors"
TEST_EMBEDDINGS = EMBEDDINGS / "test.safetensors"
IMAGE_ENCODER_METRICS = METRICS / "image_encoder.json"
# world: test images and their reconstructions; coco: real images with a caption each
IMAGE_ENCODER_SHEET = REPORTS / "image_encoder" / "sheet.png"
IMAGE_ENCODER_LOSS = PLOTS / "image_encoder_loss.csv"

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


def synthetic_embeddings(selection: str) -> Path:
    return SYNTHETIC / selection / "embeddings.safetensors"


def synthetic_captions(selection: str) -> Path:
    return SYNTHETIC / selection / "captions.parquet"


# train_vlm (one directory per variant): the synthetic selection each variant adds to the real pairs
VLM_VARIANTS = ("baseline", "synth", "synth_unbalanced")
SYNTHETIC_SELECTION = {"baseline": None, "synth": "balanced", "synth_unbalanced": "unbalanced"}
VLM = MODELS / "vlm"

# gates (one validation report per gate)
GATES = REPORTS / "gates"


def gate_report(name: str) -> Path:
    return GATES / f"{name}.json"


# evaluate
EVAL_METRICS = METRICS / "evaluate.json"
EVAL_PLOT = PLOTS / "evaluate.csv"
EVAL_EXAMPLES = REPORTS / "evaluate" / "examples.md"
EVAL_CAPTIONS = REPORTS / "evaluate" / "captions.parquet"  # test captions of every variant
EVAL_PER_IMAGE = REPORTS / "evaluate" / "per_image.parquet"  # per-image scores, val and test


# report: one HTML page of the run (metrics, curves, diversity, synthetic samples, examples)
REPORT = REPORTS / "pipeline.html"


def vlm_dir(variant: str) -> Path:
    return VLM / variant


def vlm_metrics(variant: str) -> Path:
    return METRICS / "train_vlm" / f"{variant}.json"


def vlm_loss(variant: str) -> Path:
    return PLOTS / "train_vlm" / f"{variant}.csv"
