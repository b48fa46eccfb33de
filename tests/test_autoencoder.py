"""The image autoencoder: it learns, its outputs have the promised shapes, and it survives save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synth2.models.autoencoder import (
    AutoencoderConfig,
    decode,
    encode,
    gradient_loss,
    linear_probe,
    load_autoencoder,
    save_autoencoder,
    train_autoencoder,
    training_config,
)

SIZE = 16
CONFIG = AutoencoderConfig(image_size=SIZE, embed_dim=8, channels=(8, 16))
TRAINING = training_config(steps=150, batch_size=32, lr=5e-3)


def squares(n: int, seed: int) -> np.ndarray:
    """Dark images with one bright square of random colour, size and place."""
    rng = np.random.default_rng(seed)
    pixels = np.full((n, SIZE, SIZE, 3), 20, dtype=np.uint8)
    for img in pixels:
        side = rng.integers(3, 8)
        y, x = rng.integers(0, SIZE - side, size=2)
        img[y : y + side, x : x + side] = rng.integers(80, 256, size=3)
    return pixels


@pytest.fixture(scope="module")
def trained():
    pixels = squares(200, seed=0)
    model, losses = train_autoencoder(pixels, CONFIG, TRAINING, seed=0)
    return model, losses, pixels


def test_reconstruction_loss_falls(trained):
    _, history, _ = trained
    losses = np.array(history)
    fifth = max(1, len(losses) // 5)
    assert len(losses) == TRAINING.steps
    assert np.isfinite(losses).all()
    assert losses[-fifth:].mean() < 0.7 * losses[:fifth].mean(), losses


def test_encode_decode_shapes_and_dtypes(trained):
    model, _, pixels = trained
    emb = encode(model, pixels[:10], batch_size=4)
    assert emb.shape == (10, CONFIG.embed_dim) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    images = decode(model, emb)
    assert images.shape == (10, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert encode(model, pixels[:0]).shape == (0, CONFIG.embed_dim)


def test_embedding_does_not_depend_on_batch(trained):
    model, _, pixels = trained
    np.testing.assert_allclose(encode(model, pixels[:9], batch_size=9)[3], encode(model, pixels[3:4])[0], atol=1e-5)


def test_reconstruction_beats_mean_image(trained):
    model, _, _ = trained
    held_out = squares(50, seed=1).astype(np.float32)
    recon = decode(model, encode(model, held_out.astype(np.uint8))).astype(np.float32)
    assert np.mean((recon - held_out) ** 2) < np.mean((held_out.mean(0) - held_out) ** 2)


def test_save_load_round_trip(trained, tmp_path):
    model, _, pixels = trained
    save_autoencoder(model, tmp_path / "ae")
    assert sorted(p.name for p in (tmp_path / "ae").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["embed_dim"] == CONFIG.embed_dim
    # Saving again replaces the directory in place.
    save_autoencoder(model, tmp_path / "ae")
    loaded = load_autoencoder(tmp_path / "ae")
    assert loaded.config == model.config
    np.testing.assert_array_equal(encode(loaded, pixels[:20]), encode(model, pixels[:20]))
    assert list(tmp_path.iterdir()) == [tmp_path / "ae"]  # no temporary leftovers


def test_training_is_seeded():
    pixels = squares(40, seed=2)
    training = training_config(steps=3, batch_size=8, lr=5e-3)
    a, _ = train_autoencoder(pixels, CONFIG, training, seed=5)
    b, _ = train_autoencoder(pixels, CONFIG, training, seed=5)
    np.testing.assert_array_equal(encode(a, pixels), encode(b, pixels))


def test_rejects_bad_pixels():
    with pytest.raises(ValueError, match="uint8"):
        train_autoencoder(np.zeros((4, SIZE, SIZE, 3), dtype=np.float32), CONFIG, TRAINING, seed=0)
    with pytest.raises(ValueError, match="divisible"):
        AutoencoderConfig(image_size=30, embed_dim=8, channels=(8, 16, 32))


def test_gradient_loss_sees_edges_mse_barely_sees():
    """A blurred square is the better reconstruction to MSE, a uniformly brighter one with its edges intact
    the worse: the gradient loss ranks them the other way round, which is why training adds it."""
    target = torch.zeros(1, 3, 16, 16)
    target[..., 5:11, 5:11] = 1.0
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    brighter = target + 0.3
    mse = torch.nn.functional.mse_loss
    assert mse(blurred, target) < mse(brighter, target) / 4
    assert gradient_loss(brighter, target).item() == pytest.approx(0.0, abs=1e-9)
    assert gradient_loss(blurred, target).item() > 0.05


def test_linear_probe_reads_linear_attributes():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(400, 6)).astype(np.float32)
    labels = {
        "sign": np.where(emb[:, 0] > 0, "pos", "neg"),
        "noise": rng.choice(["a", "b", "c", "d"], size=400),
        # None rows are dropped; the rest are readable from dimension 1.
        "partial": np.array([None if i % 3 else ("hi" if emb[i, 1] > 0 else "lo") for i in range(400)], dtype=object),
        "constant": np.array(["same"] * 400),
    }
    acc = linear_probe(emb, labels, holdout=0.25, seed=0)
    assert acc["sign"] > 0.95
    assert acc["partial"] > 0.9
    assert acc["noise"] < 0.45  # chance is 0.25
    assert "constant" not in acc
