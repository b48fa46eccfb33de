"""The pixel path (README "Embedding space vs pixel space"): the diffusion decoder, the stages that params
switch on, the synth_pixel variant and where its timings go."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synth2 import paths
from synth2.pipeline import STAGES, producer
from tests.tiny_project import commit_all, copy_project, dvc

PIXEL_STAGES = ("pixel_decoder@synth_pixel", "pixel_synthesize@synth_pixel", "pixel_vlm@synth_pixel")


def coloured_squares(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 32-px images, each a square of one of four colours at one of four places, and a one-hot
    embedding of (colour, place): what a decoder conditioned on the embedding can learn to draw."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], np.uint8)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    embeddings = np.zeros((n, 8), np.float32)
    for i in range(n):
        colour, place = rng.integers(4), rng.integers(4)
        row, col = divmod(int(place), 2)
        images[i, row * 16 + 2 : row * 16 + 14, col * 16 + 2 : col * 16 + 14] = colours[colour]
        embeddings[i, colour] = embeddings[i, 4 + place] = 1.0
    return images, embeddings


def test_the_decoder_learns_and_decodes_embeddings_to_images_of_the_pool_size(tmp_path: Path):
    from synth2.models import pixel_decoder as pd_

    images, embeddings = coloured_squares(256)
    config = pd_.PixelDecoderConfig(image_size=32, embed_dim=8, channels=(8, 16, 16))
    model, losses = pd_.train_pixel_decoder(images, embeddings, config, pd_.training_config(120, 32, 3e-3), seed=0)
    # Noise prediction starts near 1 ("predicts nothing") and falls as the UNet learns the images.
    assert np.mean(losses[:10]) > 0.8 and np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])

    pd_.save_pixel_decoder(model, tmp_path / "decoder")
    loaded = pd_.load_pixel_decoder(tmp_path / "decoder")
    decoded = pd_.decode_pixels(loaded, embeddings[:5], num_inference_steps=4, batch_size=2, seed=1)
    assert decoded.shape == (5, 32, 32, 3) and decoded.dtype == np.uint8
    again = pd_.decode_pixels(model, embeddings[:5], num_inference_steps=4, batch_size=2, seed=1)
    assert np.array_equal(decoded, again)  # the saved model is the trained one; sampling is seeded


def with_pixel_path(params: dict, variants: list[str]) -> dict:
    return params | {"pixel_space": params["pixel_space"] | {"variants": variants}}


def test_the_pixel_stages_exist_only_while_params_list_the_variant(tmp_path: Path):
    """Off by default: DVC resolves no pixel stage from the committed dvc.yaml and params.yaml; listing
    synth_pixel adds the three, and the description (addresses, producer) agrees with DVC."""
    from synth2.dvc_yaml import DVC_YAML, ROOT, resolved_stages

    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    on = tmp_path / "params.yaml"
    on.write_text(yaml.safe_dump(with_pixel_path(default, ["synth_pixel"])))
    stages_off, _ = resolved_stages(DVC_YAML, ROOT / "params.yaml", "world", tmp_path / "off")
    stages_on, needs = resolved_stages(DVC_YAML, on, "world", tmp_path / "on")

    assert not [s for s in stages_off if s.startswith("pixel_")]
    assert set(stages_on) - set(stages_off) == set(PIXEL_STAGES)
    assert needs["pixel_vlm@synth_pixel"] >= {"pixel_synthesize@synth_pixel"}
    assert needs["pixel_synthesize@synth_pixel"] >= {"pixel_decoder@synth_pixel", "synthesize", "prior"}
    described = {address for stage in STAGES for address in stage.addresses(yaml.safe_load(on.read_text()))}
    assert described == set(stages_on)
    assert sum(len(stage.addresses(default)) for stage in STAGES) == len(stages_off)
    pixel_doc = with_pixel_path(default, ["synth_pixel"])
    assert producer(paths.pixel_vlm_per_image("synth_pixel"), pixel_doc) == "pixel_vlm@synth_pixel"
    with pytest.raises(KeyError):
        producer(paths.pixel_vlm_per_image("synth_pixel"), default)  # no such stage while the path is off
