"""Profile `coco`: COCO-format captions with pretrained Hugging Face models (keys under `coco:`).

* prepare: read a COCO captions JSON and its image folder into the same tables as the world (synth2.coco);
  there is no unlabelled pool and no text corpus (their tables have no rows);
* caption LM: nothing is trained: a pretrained LLM (a Hugging Face folder or one GGUF file) is loaded,
  checked and snapshotted as a Hugging Face folder, so the captions stage, DVC and MLflow see one
  versioned copy of the generator;
* captions come from the LLM on `device` in `coco.captions.dtype`, through its chat template, cleaned to
  one sentence; balancing labels a caption with the class it was prompted with (and names);
* image encoder: a pretrained image backbone (synth2.models.image_backbone: a transformers model with
  CLIPVisionModelWithProjection's interface, or EfficientNet-Lite0), snapshotted;
* prior: the shared PriorTransformer trained on the human pairs, or a pretrained diffusers prior
  pipeline (`coco.prior.kind: pipeline`);
* synthesis report: embedding-space timing, and with `coco.synthesize.decoder` the pixel-space path
  (prior -> decoder -> image encoder) with a sheet of decoded images;
* the VLM's LM is `coco.train_vlm.lm_path` or the caption LLM; captions are scored with CIDEr and BLEU-4
  only (attribute accuracy needs the world's ground truth).

One hook module per stage (see synth2.profiles).
"""
