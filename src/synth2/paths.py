"""Where every stage reads and writes, relative to the project root (the DVC workspace).

`dvc.yaml` declares exactly these paths; keep the two in step.
"""

from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")

# prepare: the shapes world, or (profile coco) the same tables read from a COCO-format dataset
WORLD = DATA / "world"
PIXELS = WORLD / "pixels.safetensors"  # one uint8 array [N, H, W, 3]; tables reference rows by image_id
POOL = WORLD / "unlabeled_pool.parquet"
REAL_TRAIN = WORLD / "real_train.parquet"
TEXT_CORPUS = WORLD / "text_corpus.parquet"
TEST = WORLD / "test.parquet"
CONCEPTS = WORLD / "concepts.parquet"
VAL = WORLD / "val.parquet"  # coco profile only: held out for model selection, same columns as test
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
TEST_EMBEDDINGS = EMBEDDINGS / "test.safetensors"
IMAGE_ENCODER_METRICS = METRICS / "image_encoder.json"
RECONSTRUCTIONS = REPORTS / "image_encoder" / "reconstructions.png"
IMAGE_SAMPLES = REPORTS / "image_encoder" / "samples.png"  # coco profile: real images with a caption each
IMAGE_ENCODER_LOSS = PLOTS / "image_encoder_loss.csv"

# prior
PRIOR = MODELS / "prior"
PRIOR_METRICS = METRICS / "prior.json"
PRIOR_LOSS = PLOTS / "prior_loss.csv"

# synthesize
SYNTHETIC = DATA / "synthetic"
SYNTHETIC_BALANCED = SYNTHETIC / "balanced.safetensors"
SYNTHETIC_UNBALANCED = SYNTHETIC / "unbalanced.safetensors"
# Captions of the synthetic pairs, row-aligned with the embeddings above.
SYNTHETIC_BALANCED_CAPTIONS = SYNTHETIC / "balanced.parquet"
SYNTHETIC_UNBALANCED_CAPTIONS = SYNTHETIC / "unbalanced.parquet"
SYNTHESIZE_METRICS = METRICS / "synthesize.json"
SYNTHETIC_SHEET = REPORTS / "synthesize" / "synthetic.png"
SYNTHETIC_EXAMPLES = REPORTS / "synthesize" / "examples.md"  # coco profile without a decoder

# train_vlm (one directory per variant)
VLM_VARIANTS = ("baseline", "synth", "synth_unbalanced")
VLM = MODELS / "vlm"

# gates (one validation report per gate)
GATES = REPORTS / "gates"


def gate_report(name: str) -> Path:
    return GATES / f"{name}.json"


# evaluate
EVAL_METRICS = METRICS / "evaluate.json"
EVAL_PLOT = PLOTS / "evaluate.csv"
EVAL_EXAMPLES = REPORTS / "evaluate" / "examples.md"
EVAL_CAPTIONS = REPORTS / "evaluate" / "captions.parquet"


def vlm_dir(variant: str) -> Path:
    return VLM / variant


def vlm_metrics(variant: str) -> Path:
    return METRICS / "train_vlm" / f"{variant}.json"


def vlm_loss(variant: str) -> Path:
    return PLOTS / "train_vlm" / f"{variant}.csv"
