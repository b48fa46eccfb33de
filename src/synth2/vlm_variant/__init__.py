"""One VLM variant end to end: train it on given pairs as train_vlm does, caption and score it as evaluate does.

Two modules, so that a stage that only trains (train_vlm) does not depend on the scoring code, nor
evaluate on the training code: `synth2.vlm_variant.train` and `synth2.vlm_variant.score`.

train_vlm and evaluate run their fixed variants (synth2.pipeline.VARIANTS) through these functions; a
stage that makes an extra variant (a self-improvement round, a pixel-path VLM) calls the same ones, so its
VLM trains with the same settings and step budget and its scores are comparable row for row:

    from synth2.vlm_variant.score import caption_and_score
    from synth2.vlm_variant.train import human_pairs, train_vlm_variant

    real = human_pairs()                                    # the human pairs, (embeddings, captions)
    losses = train_vlm_variant("synth_r1", params, real, synthetic)   # saved to paths.vlm_dir("synth_r1")
    scores, per_image = caption_and_score("synth_r1", params)         # val and test, evaluate's format

`synthetic` pairs are drawn as a `train_vlm.synthetic.mix_ratio` share of every batch (tagged synthetic
with `train_vlm.synthetic.source_tags`); pairs meant to count as human ones go into `real`.
"""
