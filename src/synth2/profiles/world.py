"""Profile `world`: the embedded shapes world, where every model is small and trained here.

* prepare: sample the world (synth2.world.datasets): unlabelled pool, scarce skewed human pairs, text
  corpus, uniform test set with references, concepts; pixels in one array;
* caption LM: a small GPT-2 trained from scratch on the text corpus as concept prompt -> caption;
* captions are read back by the world parser (synth2.world.parser) for balancing, gating and scoring;
* image encoder: a convolutional autoencoder trained on the unlabelled pool (the paper's VQGAN);
* synthesis report: embedding- vs pixel-space timing through the autoencoder's decoder, and a contact
  sheet of decoded synthetic embeddings, held-out combinations first;
* the VLM starts from the caption LM; captions are scored with CIDEr/BLEU-4 and exact attribute accuracy.

Hooks import what they use inside the function (see synth2.profiles).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from synth2 import paths

if TYPE_CHECKING:
    import pandas as pd

    from synth2.gates import Table
    from synth2.params import Params
    from synth2.profiles import (
        CaptionGenerator,
        CaptionLabellers,
        CaptionLM,
        EncodedImages,
        PreparedData,
        PriorPipeline,
        SynthesisReport,
        Synthesizer,
    )

TEST_COLUMNS = ("image_id", "colour", "shape", "size", "position", "combo", "seen", "references")
EXAMPLE_KEY = "combo"
SELECTION_COLUMNS = ("caption", "concept", "colour", "shape", "size", "position", "colour2", "shape2", "relation")
CONCEPT_KIND = "combo"  # balancing balances over colour-shape combinations ("red star")
LABEL_COLUMNS = ("colour", "shape")
RESULT_COLUMNS = (
    ("attr_colour_shape", "colour+shape"),
    ("attr_all", "all attributes"),
    ("cider", "CIDEr"),
    ("bleu4", "BLEU-4"),
)
PROBED = ("colour", "shape", "size", "position")  # attributes the image encoder's linear probes read
STYLE_TOKEN = "<human>"  # the control token of the annotators' style
SHEET_SIZE = 16


def prepare(params: Params) -> PreparedData:
    from synth2.profiles import PreparedData
    from synth2.world.datasets import build_world

    world = build_world(params.world.prepare, params.seed)
    tables = {
        "unlabeled_pool": world.pool,
        "real_train": world.real_train,
        "text_corpus": world.text_corpus,
        "val": world.val,
        "test": world.test,
        "concepts": world.concepts,
    }
    return PreparedData(tables=tables, arrays={"pixels": world.pixels}, summary=world.summary())


def make_caption_lm(params: Params) -> CaptionLM:
    """A small GPT-2 trained on the corpus. Its word-level vocabulary also covers the human captions'
    words, as a real LLM's vocabulary covers annotators' words: the VLM that later starts from this LM
    must be able to write them.

    Style conditioning (`world.caption_lm.human_style_fraction` > 0): the scarce human captions join the
    training data behind the control token STYLE_TOKEN, as that share of all examples (by repetition),
    and the snapshot's config records the token as its prompt prefix, so the captions stage asks for the
    annotators' style. The LM then has to compose that style with concepts no human caption shows.
    """
    import numpy as np

    from synth2.io import read_parquet
    from synth2.models import caption_lm
    from synth2.models.tokenizer import build_tokenizer
    from synth2.profiles import CaptionLM
    from synth2.world.prompts import build_training_examples, styled

    p, c = params.world.caption_lm, params.captions
    corpus = read_parquet(paths.TEXT_CORPUS, "prepare", columns=["caption", "colour", "shape"])
    human = read_parquet(paths.REAL_TRAIN, "prepare", columns=["caption", "colour", "shape"])

    def examples_of(table: pd.DataFrame, rng: np.random.Generator) -> list:
        return build_training_examples(
            table["caption"].tolist(),
            table["colour"].tolist(),
            table["shape"].tolist(),
            c.prompt_template,
            c.unprompted_template,
            p.unprompted_fraction,
            rng,
        )

    examples = examples_of(corpus, np.random.default_rng(params.seed))
    control_tokens, prefix = [], ""
    if p.human_style_fraction > 0:
        # Its own random stream: the corpus examples are the same with and without style conditioning.
        human_examples = styled(examples_of(human, np.random.default_rng([params.seed, 1])), STYLE_TOKEN)
        copies = max(1, round(p.human_style_fraction / (1 - p.human_style_fraction) * len(examples) / len(human)))
        examples = examples + human_examples * copies
        control_tokens, prefix = [STYLE_TOKEN], f"{STYLE_TOKEN} "
    vocabulary = [t for e in examples for t in (e.prompt, e.caption)] + human["caption"].tolist()
    tokenizer = build_tokenizer(vocabulary, control_tokens=control_tokens)
    config = caption_lm.CaptionLMConfig(n_layer=p.n_layer, n_head=p.n_head, n_embd=p.n_embd, n_positions=p.n_positions)
    training = caption_lm.training_config(p.steps, p.batch_size, p.lr)
    model, losses = caption_lm.train_caption_lm(examples, tokenizer, config, training, params.seed)
    caption_lm.set_prompt_prefix(model, prefix)
    metrics = {
        "vocab_size": len(tokenizer),
        "parameters": sum(w.numel() for w in model.parameters()),
        "examples": len(examples),
        "human_style_examples": len(examples) - len(corpus),
    }
    return CaptionLM(model, tokenizer, metrics, losses)


def caption_generator(params: Params) -> CaptionGenerator:
    """The trained caption LM, prompted with its own prompt prefix (the style token when it has one)."""
    from synth2.models.caption_lm import generate_captions, load_caption_lm, prompt_prefix
    from synth2.profiles import CaptionGenerator

    model, tokenizer = load_caption_lm(paths.CAPTION_LM)
    prefix = prompt_prefix(model)
    p = params.captions

    def generate(prompts: list[str], seed: int) -> list[str]:
        prompts = [prefix + prompt for prompt in prompts]
        return generate_captions(
            model, tokenizer, prompts, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, seed
        )

    return CaptionGenerator(generate, provenance={"prompt_prefix": prefix})


def caption_labellers(params: Params) -> CaptionLabellers:
    """Captions are labelled by what the world parser reads; diversity counts colour-shape combinations."""
    from synth2.profiles import CaptionLabellers
    from synth2.world.parser import caption_labels
    from synth2.world.scenes import all_combos

    def label(work: pd.DataFrame) -> pd.DataFrame:
        return caption_labels(work["caption"].tolist())

    return CaptionLabellers(label, label, concepts=[f"{c} {s}" for c, s in all_combos()])


def real_gate_tables(params: Params) -> list[Table]:
    """World tables: attributes present and in the world's vocabularies, image ids within the pixels."""
    from safetensors import safe_open

    from synth2.gates import GateError, Table, concepts_table, expectations
    from synth2.io import read_parquet
    from synth2.world.scenes import COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES

    gxe = expectations()
    if not paths.PIXELS.exists():
        raise GateError(f"{paths.PIXELS} is missing: run the 'prepare' stage first (dvc repro prepare)")
    with safe_open(str(paths.PIXELS), "numpy") as f:
        n_images = f.get_slice(next(iter(f.keys()))).get_shape()[0]

    def scene_expectations(with_ids: bool) -> list:
        columns = ("colour", "shape", "size", "position", "combo")
        exps: list = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
        vocabularies = (
            ("colour", COLOURS),
            ("shape", SHAPES),
            ("size", SIZES),
            ("position", POSITIONS),
            ("colour2", COLOURS),  # nulls: one-object scenes
            ("shape2", SHAPES),
            ("relation", RELATIONS),
        )
        exps += [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(v)) for c, v in vocabularies]
        if with_ids:
            exps += [
                gxe.ExpectColumnValuesToNotBeNull(column="image_id"),
                gxe.ExpectColumnValuesToBeBetween(column="image_id", min_value=0, max_value=n_images - 1),
                gxe.ExpectColumnValuesToBeUnique(column="image_id"),
            ]
        return exps

    show = ["image_id", "colour", "shape", "size", "position", "combo", "caption"]
    tables = []
    for name, path, with_ids in (
        ("unlabeled_pool", paths.POOL, True),
        ("real_train", paths.REAL_TRAIN, True),
        ("val", paths.VAL, True),
        ("test", paths.TEST, True),
        ("text_corpus", paths.TEXT_CORPUS, False),
    ):
        frame = read_parquet(path, "prepare")
        exps = [gxe.ExpectTableRowCountToBeBetween(min_value=1), *scene_expectations(with_ids)]
        if "caption" in frame or name in ("real_train", "text_corpus"):
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column="caption"))
        if name in ("val", "test"):
            frame = frame.assign(n_references=frame["references"].map(lambda r: 0 if r is None else len(r)))
            exps += [
                gxe.ExpectColumnValuesToNotBeNull(column="seen"),
                gxe.ExpectColumnValuesToBeBetween(column="n_references", min_value=1),
            ]
        tables.append(Table(name, frame, exps, show))
    tables.append(concepts_table())
    return tables


def encode_images(params: Params) -> EncodedImages:
    """Train the autoencoder on the unlabelled pool; embed the real and test images with it.

    Its key metric is how linearly readable each attribute is from the embedding (a probe trained on
    pool labels, scored on held-out pool images): a captioner cannot learn what the embedding lacks.
    """
    import numpy as np

    from synth2.io import read_parquet, read_tensors
    from synth2.models import autoencoder
    from synth2.profiles import EncodedImages

    p = params.world.image_encoder
    pixels = read_tensors(paths.PIXELS, "prepare")["pixels"]
    pool = read_parquet(paths.POOL, "prepare", columns=["image_id", *PROBED])
    real = read_parquet(paths.REAL_TRAIN, "prepare", columns=["image_id"])
    val = read_parquet(paths.VAL, "prepare", columns=["image_id"])
    test = read_parquet(paths.TEST, "prepare", columns=["image_id"])

    pool_pixels = pixels[pool["image_id"].to_numpy()]
    config = autoencoder.AutoencoderConfig(image_size=pool_pixels.shape[1], embed_dim=p.embed_dim)
    training = autoencoder.training_config(p.steps, p.batch_size, p.lr)
    model, losses = autoencoder.train_autoencoder(pool_pixels, config, training, params.seed, p.gradient_loss_weight)

    probe = autoencoder.linear_probe(
        autoencoder.encode(model, pool_pixels),
        {a: pool[a].to_numpy() for a in PROBED},
        holdout=p.probe_holdout,
        seed=params.seed,
    )
    embeddings = {}
    for table, path in ((real, paths.REAL_EMBEDDINGS), (val, paths.VAL_EMBEDDINGS), (test, paths.TEST_EMBEDDINGS)):
        ids = table["image_id"].to_numpy()
        embeddings[path] = (ids, autoencoder.encode(model, pixels[ids]))

    test_pixels = pixels[test["image_id"].to_numpy()]
    recon = autoencoder.decode(model, embeddings[paths.TEST_EMBEDDINGS][1])
    recon_mse = float(np.mean((recon.astype(np.float32) - test_pixels.astype(np.float32)) ** 2) / 255.0**2)
    n_sheet = 8
    sample = test_pixels[:: max(1, len(test_pixels) // n_sheet)][:n_sheet]
    sheet = (
        np.concatenate([sample, autoencoder.decode(model, autoencoder.encode(model, sample))]),
        ["original"] * len(sample) + ["reconstruction"] * len(sample),
        len(sample),
    )
    metrics = {"probe_accuracy": probe, "test_reconstruction_mse": recon_mse}
    return EncodedImages(
        lambda directory: autoencoder.save_autoencoder(model, directory), embeddings, metrics, sheet, losses
    )


def prior_pipeline(params: Params) -> PriorPipeline | None:
    """The world's prior is always trained on its human pairs: a pretrained prior speaks CLIP, not the
    world's encoder."""
    return None


def synthesis_report(params: Params, balanced: pd.DataFrame, synthesize: Synthesizer) -> SynthesisReport:
    """How many pairs show held-out combinations; embedding- vs pixel-space time; a contact sheet.

    The pixel-space path is prior -> autoencoder decoder -> pixels -> image encoder: what synthesising
    images would cost on top of synthesising embeddings.
    """
    import time

    import pandas as pd

    from synth2.contact_sheet import contact_sheet
    from synth2.io import load_output, read_parquet, require_dir, write_json
    from synth2.models.autoencoder import decode, encode, load_autoencoder
    from synth2.profiles import SynthesisReport

    seen_combos = set(read_parquet(paths.REAL_TRAIN, "prepare", columns=["combo"])["combo"])
    directory = require_dir(paths.IMAGE_ENCODER, "image_encoder")
    model = load_output(directory, "image_encoder", "autoencoder", lambda: load_autoencoder(directory))
    held_out = ~balanced["concept"].isin(seen_combos)

    captions = balanced["caption"].tolist()[: params.synthesize.timing_captions]
    synthesize(captions[:8], params.seed)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    synthesize(captions, params.seed)
    embedding_s = time.perf_counter() - start
    start = time.perf_counter()
    encode(model, decode(model, synthesize(captions, params.seed)))
    pixel_s = time.perf_counter() - start

    sample = pd.concat([balanced[held_out].head(SHEET_SIZE // 2), balanced[~held_out].head(SHEET_SIZE)])
    sample = sample.head(SHEET_SIZE)
    images = decode(model, synthesize(sample["caption"].tolist(), params.seed))
    labels = [("" if c in seen_combos else "[held out] ") + t for c, t in zip(sample["concept"], sample["caption"])]
    contact_sheet(images, labels, paths.SYNTHETIC_SHEET)
    write_json(labels, paths.SYNTHETIC_SHEET_CAPTIONS)  # the sheet cuts long captions: here they are whole
    timings = {
        "captions": len(captions),
        "embedding_seconds": embedding_s,
        "pixel_seconds": pixel_s,
        "embedding_captions_per_s": len(captions) / embedding_s,
        "pixel_captions_per_s": len(captions) / pixel_s,
        "pixel_over_embedding_time": pixel_s / embedding_s,
    }
    return SynthesisReport(metrics={"held_out_pairs": int(held_out.sum())}, timings=timings)


def vlm_lm(params: Params) -> Path:
    """The VLM starts from the caption LM, whose vocabulary covers the annotators' words."""
    from synth2.io import require_dir

    return require_dir(paths.CAPTION_LM, "caption_lm")


def score(predictions: list[str], table: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """CIDEr and BLEU-4 against the references, plus exact attribute accuracy through the world parser;
    and per image: its CIDEr and whether each attribute is right (means of these are the aggregates)."""
    import pandas as pd

    from synth2.caption_metrics import scores_with_cider_per_id
    from synth2.world.accuracy import attribute_hits

    references = {i: list(r) for i, r in enumerate(table["references"])}
    scores, cider = scores_with_cider_per_id(dict(enumerate(predictions)), references)
    hits = attribute_hits(predictions, table)
    per_image = pd.DataFrame({"image_id": table["image_id"].to_numpy(), "cider": list(cider.values())})
    per_image = pd.concat([per_image, hits.add_prefix("attr_").astype(float)], axis=1)
    return scores | {f"attr_{name}": float(hits[name].mean()) for name in hits.columns}, per_image


def check_params(params: Params, val: pd.DataFrame | None = None) -> None:
    """Nothing beyond the types and ranges synth2.params checks: when tracking.champion_metric is not among
    the world's validation metrics, evaluate's choice of the champion names them."""


def data_description(params: Params) -> str:
    w = params.world.prepare
    return (
        f"{w.real_train_size} real pairs (Zipf a={w.zipf_a}, {w.holdout_fraction:.0%} of colour-shape "
        f"combinations held out); test: {w.test_per_combo} images per combination"
    )
