"""Profile `coco`: COCO-format captions with pretrained Hugging Face models (keys under `coco:`).

* prepare: read a COCO captions JSON and its image folder into the same tables as the world (synth2.coco);
* caption LM: nothing is trained: a pretrained LLM is loaded, checked and snapshotted, so the captions
  stage, DVC and MLflow see one versioned copy of the generator;
* captions come from the LLM on `device` in `coco.captions.dtype`, through its chat template, cleaned to
  one sentence; balancing labels a caption with the class it was prompted with (and names);
* image encoder: a pretrained vision model with CLIPVisionModelWithProjection's interface;
* prior: the shared PriorTransformer trained on the human pairs, or a pretrained diffusers prior
  pipeline (`coco.prior.kind: pipeline`);
* synthesis report: embedding-space timing, and with `coco.synthesize.decoder` the pixel-space path
  (prior -> decoder -> image encoder) with a sheet of decoded images;
* the VLM's LM is `coco.train_vlm.lm_path` or the caption LLM; captions are scored with CIDEr and BLEU-4
  only (attribute accuracy needs the world's ground truth).

Hooks import what they use inside the function (see synth2.profiles).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from synth2 import paths

if TYPE_CHECKING:
    import numpy as np
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

log = logging.getLogger("synth2")

TEST_COLUMNS = ("image_id", "file_name", "image_path", "seen", "references")
EXAMPLE_KEY = "file_name"
SELECTION_COLUMNS = ("caption", "concept")
CONCEPT_KIND = "class"
LABEL_COLUMNS: tuple[str, ...] = ()
RESULT_COLUMNS = (("cider", "CIDEr"), ("bleu4", "BLEU-4"))
METRICS = ("bleu4", "cider")  # what `score` returns for each subset of images
SUBSETS = ("overall", "seen", "unseen")  # evaluate's subsets; one with no image is not scored
SHEET_SIZE = 16
SHEET_TILE = 32  # decoded images are shrunk to this many pixels a side for the contact sheet
N_EXAMPLES = 16


def check_params(params: Params, val: pd.DataFrame | None = None) -> None:
    """The caption LLM is named (params.yaml ships it empty: there is no sensible default), and the champion
    metric is one evaluate can score (see `_check_champion_metric`)."""
    from synth2.params import ParamsError

    if not params.coco.caption_lm.pretrained:
        raise ParamsError(
            "coco.caption_lm.pretrained is not set: the coco profile needs a caption LLM "
            "(a local model directory or a Hugging Face hub id, e.g. Qwen/Qwen2.5-1.5B-Instruct)"
        )
    _check_champion_metric(params.tracking.champion_metric, val)


def _check_champion_metric(key: str, val: pd.DataFrame | None) -> None:
    """`tracking.champion_metric` must be SUBSET.METRIC as evaluate scores it on validation: no attribute
    accuracy (that needs the shapes world), and, once the data exist, no subset without validation images.
    "unseen" images name a class no training caption names; with thousands of COCO training images every
    class is named, so `unseen.*` is usually empty."""
    from synth2.params import ParamsError

    subsets = SUBSETS if val is None else _subsets_with_images(val["seen"].to_numpy(bool))
    available = [f"{subset}.{metric}" for subset in subsets for metric in METRICS]
    if key in available:
        return
    subset, _, metric = key.partition(".")
    why = (
        f"the validation split has no '{subset}' images"
        if subset in SUBSETS and metric in METRICS
        else "the coco profile scores CIDEr and BLEU-4 only (attribute accuracy needs the shapes world)"
    )
    raise ParamsError(f"tracking.champion_metric: '{key}': {why}; pick one of {', '.join(available)}")


def _subsets_with_images(seen: np.ndarray) -> list[str]:
    has = {"overall": len(seen) > 0, "seen": bool(seen.any()), "unseen": bool((~seen).any())}
    return [subset for subset in SUBSETS if has[subset]]


def prepare(params: Params) -> PreparedData:
    """real_train, val, test and concepts from the JSON; the text corpus stays empty (the pretrained LLM
    brings its own knowledge) so that every profile writes the tables caption_lm declares.

    The champion metric is checked against the validation split here, the first moment the data are known,
    rather than only by evaluate after every other stage has run (prepare's outputs do not depend on it,
    so dvc.yaml does not declare it: evaluate checks again before captioning)."""
    import pandas as pd

    from synth2.coco.dataset import build_coco
    from synth2.profiles import PreparedData

    data = build_coco(params.coco.prepare, params.seed)
    check_params(params, data.val)
    tables = {
        "real_train": data.real_train,
        "val": data.val,
        "test": data.test,
        "concepts": data.concepts,
        "text_corpus": pd.DataFrame({"caption": pd.Series([], dtype=str)}),
    }
    return PreparedData(tables=tables, arrays={}, summary=data.report)


def make_caption_lm(params: Params) -> CaptionLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth2.pretrained import PretrainedError, load_or_explain, quiet_loading, resolve_source
    from synth2.profiles import CaptionLM

    source, param = params.coco.caption_lm.pretrained, "coco.caption_lm.pretrained"
    directory = resolve_source(source, param)
    with quiet_loading():
        model = load_or_explain(
            param, source, "a causal LM", lambda: AutoModelForCausalLM.from_pretrained(directory, dtype="auto")
        )
        tokenizer = load_or_explain(param, source, "its tokenizer", lambda: AutoTokenizer.from_pretrained(directory))
    if tokenizer.eos_token_id is None and tokenizer.pad_token_id is None:
        raise PretrainedError(
            f"{param}: the tokenizer of '{source}' has neither an eos nor a pad token; captions cannot be batched"
        )
    metrics = {
        "source": source,
        "architecture": type(model).__name__,
        "dtype": str(model.dtype).removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "parameters": sum(w.numel() for w in model.parameters()),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
    log.info("caption LLM %s (%s, %.1fM params)", source, type(model).__name__, metrics["parameters"] / 1e6)
    return CaptionLM(model, tokenizer, metrics)


def caption_generator(params: Params) -> CaptionGenerator:
    """The snapshotted LLM on `device` in `coco.captions.dtype`; prompts through its chat template.

    Style conditioning (`coco.captions.few_shot` = k > 0): every prompt starts with k human training
    captions as examples of the wanted style, drawn per prompt with the seed (in-context learning).
    """
    import numpy as np

    from synth2.coco.captions import chat_prompts, clean_caption, few_shot_prompt
    from synth2.io import read_parquet
    from synth2.models.caption_lm import generate_captions, load_caption_lm
    from synth2.pretrained import resolve_device, resolve_dtype
    from synth2.profiles import CaptionGenerator

    p, c = params.captions, params.coco.captions
    device = resolve_device(params.device)
    model, tokenizer = load_caption_lm(paths.CAPTION_LM, dtype=resolve_dtype(c.dtype, device))
    model = model.to(device)
    log.info("caption LLM on %s in %s", device, model.dtype)
    examples = read_parquet(paths.REAL_TRAIN, "prepare", columns=["caption"])["caption"].tolist() if c.few_shot else []

    def generate(prompts: list[str], seed: int) -> list[str]:
        if examples:
            rng = np.random.default_rng([seed, 2])
            prompts = [few_shot_prompt(prompt, examples, c.few_shot, rng) for prompt in prompts]
        inputs = chat_prompts(tokenizer, prompts) if c.chat_template else prompts
        raw = generate_captions(model, tokenizer, inputs, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, seed)
        return [clean_caption(text, c.max_words) for text in raw]

    provenance = {
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "few_shot": c.few_shot,
    }
    return CaptionGenerator(generate, provenance)


def caption_labellers(params: Params) -> CaptionLabellers:
    """Prompted captions: the class they were prompted with (kept only when they name it, unless
    `coco.balance.require_concept_mention` is off); unprompted ones: the first class they name."""
    from synth2.coco.concepts import mention_labeller, prompt_labeller
    from synth2.io import read_parquet
    from synth2.profiles import CaptionLabellers

    concepts = read_parquet(paths.CONCEPTS, "prepare", columns=["concept"])["concept"].tolist()
    hint = (
        "no caption names the concept it was prompted with; check captions.prompt_template and the LLM, "
        "or set coco.balance.require_concept_mention: false"
    )
    prompted = prompt_labeller(params.coco.balance.require_concept_mention)
    return CaptionLabellers(prompted, mention_labeller(concepts), concepts=concepts, unlabelled_hint=hint)


def real_gate_tables(params: Params) -> list[Table]:
    """ids, paths and captions present, every test image with references, concepts unique."""
    from synth2.gates import Table, concepts_table, expectations
    from synth2.io import read_parquet

    gxe = expectations()
    tables = []
    for name, path in (("real_train", paths.REAL_TRAIN), ("val", paths.VAL), ("test", paths.TEST)):
        frame = read_parquet(path, "prepare", columns=["image_id", "file_name", "image_path"])
        exps = [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("image_id", "file_name", "image_path")),
        ]
        if name == "real_train":
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column="caption"))
        else:
            frame = frame.assign(n_references=frame["references"].map(lambda r: 0 if r is None else len(r)))
            exps += [
                gxe.ExpectColumnValuesToBeUnique(column="image_id"),
                gxe.ExpectColumnValuesToNotBeNull(column="seen"),
                gxe.ExpectColumnValuesToBeBetween(column="n_references", min_value=1),
            ]
        tables.append(Table(name, frame, exps, ["image_id", "file_name", "caption"]))
    tables.append(concepts_table())
    return tables


def _vision_model(params: Params):
    """(model, image processor) of `coco.image_encoder.model` on `device` in its dtype."""
    from synth2.models.vision import load_vision_model, vision_class
    from synth2.pretrained import resolve_device, resolve_dtype, resolve_source

    p = params.coco.image_encoder
    vision_class(p.model_class, "coco.image_encoder.model_class")  # a typo fails before any download
    device = resolve_device(params.device)
    model_dir = resolve_source(p.model, "coco.image_encoder.model")
    processor_dir = (
        resolve_source(p.image_processor, "coco.image_encoder.image_processor") if p.image_processor else model_dir
    )
    dtype = resolve_dtype(p.dtype, device)
    return load_vision_model(model_dir, p.model_class, processor_dir, device, dtype, source=p.model)


def _thumbnails(files: list[str], size: int = 48) -> np.ndarray:
    import numpy as np

    from synth2.models.vision import open_rgb

    return np.stack([np.asarray(open_rgb(f).resize((size, size))) for f in files])


def encode_images(params: Params) -> EncodedImages:
    """Embed the real and test images with the pretrained vision model, in batches on `device`."""
    from synth2.io import read_parquet
    from synth2.models.vision import embed_files, save_vision_model
    from synth2.profiles import EncodedImages

    real = read_parquet(paths.REAL_TRAIN, "prepare", columns=["image_id", "image_path", "caption"])
    val = read_parquet(paths.VAL, "prepare", columns=["image_id", "image_path"])
    test = read_parquet(paths.TEST, "prepare", columns=["image_id", "image_path"])
    model, processor = _vision_model(params)
    embeddings = {}
    for table, path in ((real, paths.REAL_EMBEDDINGS), (val, paths.VAL_EMBEDDINGS), (test, paths.TEST_EMBEDDINGS)):
        images = table.drop_duplicates("image_id")  # real_train has one row per caption
        emb = embed_files(model, processor, images["image_path"].tolist(), params.coco.image_encoder.batch_size)
        embeddings[path] = (images["image_id"].to_numpy(), emb)
    sample = real.drop_duplicates("image_id").head(8)
    sheet = (_thumbnails(sample["image_path"].tolist()), sample["caption"].tolist(), 4)
    metrics = {
        "model": params.coco.image_encoder.model,
        "embed_dim": int(next(iter(embeddings.values()))[1].shape[1]),
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
    }
    return EncodedImages(lambda directory: save_vision_model(model, processor, directory), embeddings, metrics, sheet)


def prior_pipeline(params: Params) -> PriorPipeline | None:
    from synth2.profiles import PriorPipeline

    p = params.coco.prior
    if p.kind != "pipeline":
        return None
    return PriorPipeline(source=p.pipeline, param="coco.prior.pipeline", guidance_scale=p.guidance_scale, dtype=p.dtype)


def synthesis_report(params: Params, balanced: pd.DataFrame, synthesize: Synthesizer) -> SynthesisReport:
    """Pairs of classes no human caption names; embedding-space time, and with a decoder the pixel-space
    path with a sheet of decoded images (else an examples table)."""
    import time

    import numpy as np

    from synth2.coco.concepts import named_concepts
    from synth2.contact_sheet import contact_sheet
    from synth2.io import atomic_path, read_parquet, write_json
    from synth2.profiles import SynthesisReport

    seed = params.seed
    real_captions = read_parquet(paths.REAL_TRAIN, "prepare", columns=["caption"])["caption"]
    named = named_concepts(real_captions, balanced["concept"].dropna().unique())
    captions = balanced["caption"].tolist()[: params.synthesize.timing_captions]
    synthesize(captions[:8], seed)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    synthetic = synthesize(captions, seed)
    embedding_s = time.perf_counter() - start
    timings = {
        "captions": len(captions),
        "embedding_seconds": embedding_s,
        "embedding_captions_per_s": len(captions) / embedding_s,
    }
    metrics = {"held_out_pairs": int((~balanced["concept"].isin(named)).sum())}

    lines = ["| concept | named by human captions | caption |", "|---|---|---|"]
    sample = balanced.head(N_EXAMPLES)
    lines += [f"| {c} | {'yes' if c in named else 'no'} | {t} |" for c, t in zip(sample["concept"], sample["caption"])]
    with atomic_path(paths.SYNTHETIC_EXAMPLES) as tmp:
        tmp.write_text("\n".join(lines) + "\n")

    round_trip = _pixel_round_trip(params)
    if round_trip is None:
        return SynthesisReport(
            metrics=metrics | {"pixel_path": "not configured (coco.synthesize.decoder)"}, timings=timings
        )

    round_trip(synthesize(captions[:2], seed), seed)  # warm-up
    start = time.perf_counter()
    re_encoded, _ = round_trip(synthesize(captions, seed), seed)
    pixel_s = time.perf_counter() - start
    cosine = (synthetic * re_encoded).sum(1) / (
        np.linalg.norm(synthetic, axis=1) * np.linalg.norm(re_encoded, axis=1) + 1e-8
    )
    # How much of the synthetic embedding survives the trip through pixels.
    metrics["round_trip_cosine"] = float(cosine.mean())
    timings |= {
        "pixel_seconds": pixel_s,
        "pixel_captions_per_s": len(captions) / pixel_s,
        "pixel_over_embedding_time": pixel_s / embedding_s,
    }
    sample = balanced.head(SHEET_SIZE)
    _, images = round_trip(synthesize(sample["caption"].tolist(), seed), seed)
    thumbs = np.stack([np.asarray(image.convert("RGB").resize((SHEET_TILE, SHEET_TILE))) for image in images])
    contact_sheet(thumbs, sample["caption"].tolist(), paths.SYNTHETIC_SHEET)
    write_json(sample["caption"].tolist(), paths.SYNTHETIC_SHEET_CAPTIONS)
    return SynthesisReport(metrics=metrics, timings=timings)


def _pixel_round_trip(params: Params):
    """embeddings, seed -> (re-encoded embeddings, images) through `coco.synthesize.decoder` and the image
    encoder snapshot, or None when no decoder is configured."""
    from PIL import Image

    from synth2.io import require_dir
    from synth2.models.decoder import check_embedding_dim, decode_embeddings, load_decoder
    from synth2.models.vision import embed_images, load_saved_vision_model
    from synth2.pretrained import resolve_device, resolve_dtype, resolve_source

    p, batch_size = params.coco.synthesize, params.synthesize.batch_size
    if not p.decoder:
        return None
    device = resolve_device(params.device)
    dtype = resolve_dtype(p.dtype, device)
    decoder = load_decoder(resolve_source(p.decoder, "coco.synthesize.decoder"), p.decoder, device, dtype)
    vision, processor = load_saved_vision_model(require_dir(paths.IMAGE_ENCODER, "image_encoder"), device, dtype)
    # The unconditional embedding, as Kandinsky's prior makes it: the encoder's view of a black image.
    negative = embed_images(vision, processor, [Image.new("RGB", (p.decoder_image_size,) * 2)], 1)[0]
    check_embedding_dim(decoder, len(negative), p.decoder)

    def round_trip(embeddings: np.ndarray, seed: int) -> tuple[np.ndarray, list]:
        size, steps = p.decoder_image_size, p.decoder_steps
        images = decode_embeddings(decoder, embeddings, negative, size, steps, batch_size, seed)
        return embed_images(vision, processor, images, batch_size), images

    return round_trip


def vlm_lm(params: Params) -> Path:
    """`coco.train_vlm.lm_path` when set, else the caption LLM's snapshot."""
    from synth2.io import require_dir
    from synth2.pretrained import resolve_source

    if params.coco.train_vlm.lm_path:
        return resolve_source(params.coco.train_vlm.lm_path, "coco.train_vlm.lm_path")
    return require_dir(paths.CAPTION_LM, "caption_lm")


def score(predictions: list[str], table: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """CIDEr and BLEU-4 against the references (attribute accuracy needs the world's ground truth), and
    each image's CIDEr."""
    import pandas as pd

    from synth2.caption_metrics import scores_with_cider_per_id

    references = {i: list(r) for i, r in enumerate(table["references"])}
    scores, cider = scores_with_cider_per_id(dict(enumerate(predictions)), references)
    return scores, pd.DataFrame({"image_id": table["image_id"].to_numpy(), "cider": list(cider.values())})


def data_description(params: Params) -> str:
    p = params.coco.prepare
    cap = f", at most {p.max_train_images} training images" if p.max_train_images else ""
    return f"COCO-format data from {p.annotations}{cap}"
