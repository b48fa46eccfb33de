"""The text -> image-embedding prior: it learns, samples deterministically, and survives save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth2.io import MissingInputError
from synth2.models.prior import (
    PriorConfig,
    build_prior,
    load_prior,
    sample_prior,
    save_prior,
    train_prior,
    training_config,
)

TEXT_DIM, IMAGE_DIM = 384, 8
CONFIG = PriorConfig(num_layers=1, num_attention_heads=2, attention_head_dim=16, num_train_timesteps=100)
TRAINING = training_config(steps=150, batch_size=32, lr=3e-3)
SAMPLING_STEPS = 10


def toy_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm 'caption embeddings' from 6 concepts; the image embedding is a fixed linear map of them."""
    rng = np.random.default_rng(seed)
    concepts = np.random.default_rng(99).normal(size=(6, TEXT_DIM))
    text = concepts[rng.integers(6, size=n)] + 0.02 * rng.normal(size=(n, TEXT_DIM))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    weights = np.random.default_rng(98).normal(size=(TEXT_DIM, IMAGE_DIM))
    image = 3.0 + text @ weights  # offset: checks that the mean is restored
    return text.astype(np.float32), image.astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    text, image = toy_pairs(96, seed=0)
    prior, scheduler, history = train_prior(text, image, CONFIG, TRAINING, seed=0)
    return prior, scheduler, history, text, image


def test_loss_falls(trained):
    _, _, history, _, _ = trained
    losses = np.array(history)
    fifth = max(1, len(losses) // 5)
    assert len(losses) == TRAINING.steps
    assert np.isfinite(losses).all()
    assert losses[-fifth:].mean() < 0.7 * losses[:fifth].mean(), losses


def test_normalisation_stored_in_model(trained):
    prior, _, _, _, image = trained
    np.testing.assert_allclose(prior.clip_mean.detach().numpy()[0], image.mean(0), rtol=1e-5)
    np.testing.assert_allclose(prior.clip_std.detach().numpy()[0], image.std(0, ddof=1), rtol=1e-4)


def test_samples_shape_finite_and_seeded(trained):
    prior, scheduler, _, text, _ = trained
    a = sample_prior(prior, scheduler, text[:12], SAMPLING_STEPS, batch_size=5, seed=1, progress=False)
    b = sample_prior(prior, scheduler, text[:12], SAMPLING_STEPS, batch_size=5, seed=1, progress=False)
    c = sample_prior(prior, scheduler, text[:12], SAMPLING_STEPS, batch_size=5, seed=2, progress=False)
    assert a.shape == (12, IMAGE_DIM) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # The seed fixes the samples whatever the batching.
    whole = sample_prior(prior, scheduler, text[:12], SAMPLING_STEPS, batch_size=64, seed=1, progress=False)
    np.testing.assert_allclose(a, whole, atol=1e-4)
    empty = sample_prior(prior, scheduler, text[:0], SAMPLING_STEPS, seed=1, progress=False)
    assert empty.shape == (0, IMAGE_DIM)


def test_samples_follow_the_caption(trained):
    """Samples for a caption sit nearer that caption's true embedding than other captions' embeddings do."""
    prior, scheduler, _, _, image = trained
    text, truth = toy_pairs(30, seed=1)
    samples = sample_prior(prior, scheduler, text, SAMPLING_STEPS, seed=0, progress=False)
    mean = image.mean(0)
    own = np.linalg.norm(samples - truth, axis=1).mean()
    to_mean = np.linalg.norm(mean - truth, axis=1).mean()
    assert own < 0.7 * to_mean, (own, to_mean)


def test_save_load_round_trip(trained, tmp_path):
    prior, scheduler, _, text, _ = trained
    save_prior(prior, scheduler, tmp_path / "prior")
    assert {p.name for p in (tmp_path / "prior").iterdir()} == {"prior", "scheduler"}
    assert (tmp_path / "prior" / "prior" / "diffusion_pytorch_model.safetensors").is_file()
    save_prior(prior, scheduler, tmp_path / "prior")  # replaces in place
    loaded, loaded_scheduler = load_prior(tmp_path / "prior")
    assert loaded_scheduler.config.prediction_type == scheduler.config.prediction_type
    before = sample_prior(prior, scheduler, text[:8], SAMPLING_STEPS, seed=3, progress=False)
    after = sample_prior(loaded, loaded_scheduler, text[:8], SAMPLING_STEPS, seed=3, progress=False)
    np.testing.assert_array_equal(before, after)
    assert list(tmp_path.iterdir()) == [tmp_path / "prior"]


def test_load_refuses_prior_without_statistics(trained, tmp_path):
    _, scheduler, _, _, _ = trained
    torch.manual_seed(0)
    save_prior(build_prior(CONFIG, IMAGE_DIM), scheduler, tmp_path / "raw")
    with pytest.raises(MissingInputError, match="clip_std"):
        load_prior(tmp_path / "raw")


def test_sampling_rejects_wrong_text_dim(trained):
    prior, scheduler, _, _, _ = trained
    with pytest.raises(ValueError, match="dim 10"):
        sample_prior(prior, scheduler, np.zeros((2, 10), dtype=np.float32), 2, progress=False)


def test_load_names_the_missing_stage(tmp_path, monkeypatch):
    from synth2 import paths

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInputError, match=r"run the 'prior' stage first \(dvc repro prior\)"):
        load_prior(paths.PRIOR)
    with pytest.raises(MissingInputError, match=r"run the 'prior' stage first"):
        load_prior(tmp_path / paths.PRIOR)  # absolute, inside the project
    with pytest.raises(MissingInputError, match=r"is missing: run the stage that writes it first \(dvc repro\)"):
        load_prior(tmp_path / "absent")


def test_rejects_bad_inputs():
    text, image = toy_pairs(8, seed=0)
    with pytest.raises(ValueError, match="equally many"):
        train_prior(text, image[:4], CONFIG, TRAINING, seed=0)
    image[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_prior(text, image, CONFIG, TRAINING, seed=0)
