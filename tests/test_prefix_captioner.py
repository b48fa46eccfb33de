"""The ClipCap-style VLM: prefix mapper + causal LM over image embeddings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from synth2.io import MissingInputError
from synth2.models.caption_lm import CaptionLMConfig, build_caption_lm, save_caption_lm
from synth2.models.prefix_captioner import (
    PrefixCaptioner,
    PrefixCaptionerConfig,
    train_prefix_captioner,
    training_config,
)
from synth2.models.tokenizer import build_tokenizer

CAPTIONS = [
    "a small red star in the top left",
    "a big blue circle at the bottom",
    "green square, centre.",
]
SYNTHETIC_CAPTIONS = ["a big red square in the top right", "a small green circle at the bottom"]
EMBED_DIM = 16
CONFIG = PrefixCaptionerConfig(
    embed_dim=EMBED_DIM, prefix_length=2, freeze_lm=False, unfreeze_top_layers=0, max_caption_tokens=24
)
OVERFIT = training_config(steps=120, batch_size=12, lr=3e-3)
MIX_RATIO = 0.5


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A tiny random caption LM saved like the caption_lm stage saves it."""
    tokenizer = build_tokenizer(CAPTIONS + SYNTHETIC_CAPTIONS + ["concepts: red star caption:"])
    torch.manual_seed(0)
    model = build_caption_lm(tokenizer, CaptionLMConfig(n_layer=1, n_head=2, n_embd=32, n_positions=32))
    path = tmp_path_factory.mktemp("lm") / "caption_lm"
    save_caption_lm(model, tokenizer, path)
    return path


def embeddings(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, EMBED_DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def overfit(lm_dir):
    real = (embeddings(3, seed=0), CAPTIONS)
    model, losses = train_prefix_captioner(lm_dir, real, None, CONFIG, OVERFIT, MIX_RATIO, seed=0)
    return model, losses, real


def test_overfits_three_pairs_to_their_exact_captions(overfit):
    model, losses, (emb, captions) = overfit
    assert len(losses) == OVERFIT.steps and losses[-1] < 0.1 * losses[0]
    assert model.generate(emb, max_new_tokens=16) == captions


def test_save_load_round_trip_gives_identical_generations(overfit, tmp_path):
    model, _, (emb, captions) = overfit
    model.save(tmp_path / "vlm")
    reloaded = PrefixCaptioner.load(tmp_path / "vlm")
    assert reloaded.config == model.config
    assert reloaded.generate(emb, max_new_tokens=16, batch_size=2) == model.generate(emb, max_new_tokens=16)
    ids, mask = model.encode_captions(captions)
    with torch.no_grad():
        assert torch.allclose(reloaded(torch.as_tensor(emb), ids, mask), model(torch.as_tensor(emb), ids, mask))
    # Saving again over an existing directory replaces it atomically.
    model.save(tmp_path / "vlm")
    with pytest.raises(MissingInputError):
        PrefixCaptioner.load(tmp_path / "nothing_here")


def test_loss_ignores_prefix_and_padding(overfit):
    model, _, (emb, captions) = overfit
    ids, mask = model.encode_captions(captions[:1])
    padded_ids = torch.cat([ids, torch.full((1, 5), 7)], dim=1)  # junk ids behind a zero mask
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        assert torch.allclose(
            model(torch.as_tensor(emb[:1]), ids, mask), model(torch.as_tensor(emb[:1]), padded_ids, padded_mask)
        )


def test_synthetic_pairs_are_mixed_into_batches(lm_dir):
    real = (embeddings(3, seed=0), CAPTIONS)
    synthetic = (embeddings(2, seed=1), SYNTHETIC_CAPTIONS)
    model, _ = train_prefix_captioner(lm_dir, real, synthetic, CONFIG, OVERFIT, MIX_RATIO, seed=0)
    assert model.generate(synthetic[0], max_new_tokens=16) == SYNTHETIC_CAPTIONS
    assert model.generate(real[0], max_new_tokens=16) == CAPTIONS


def test_freeze_lm_keeps_lm_weights_and_trains_mapper(lm_dir):
    frozen = replace(CONFIG, freeze_lm=True)
    original = AutoModelForCausalLM.from_pretrained(lm_dir).state_dict()
    real = (embeddings(3, seed=0), CAPTIONS)
    model, losses = train_prefix_captioner(lm_dir, real, None, frozen, replace(OVERFIT, steps=20), MIX_RATIO, seed=0)
    assert all(torch.equal(v, original[k]) for k, v in model.lm.state_dict().items())
    assert not any(p.requires_grad for p in model.lm.parameters())
    model.train()
    assert not model.lm.training  # a frozen LM keeps dropout off even while the mapper trains
    assert losses[-1] < losses[0]  # only the mapper can have lowered it


def test_source_tags_tell_real_from_synthetic_pairs_of_the_same_embeddings(lm_dir):
    """With source tags (the default configuration), the same embeddings paired with one caption as real
    and another as synthetic are both learned, each under its own tag; generation asks for the real one.
    Without the tag the two targets conflict and neither tag can prefer its own caption."""
    from synth2.models.pair_sampler import REAL, SYNTHETIC

    shared = embeddings(2, seed=3)
    real, synthetic = (shared, CAPTIONS[:2]), (shared, SYNTHETIC_CAPTIONS)
    training = replace(OVERFIT, steps=300)  # the tag starts at zero: it takes longer than one caption per input
    model, _ = train_prefix_captioner(lm_dir, real, synthetic, replace(CONFIG, source_tags=True), training, 0.5, seed=0)

    def loss(captions: list[str], source: int) -> float:
        ids, mask = model.encode_captions(captions)
        tags = torch.full((len(captions),), source, dtype=torch.long)
        with torch.no_grad():
            return model(torch.as_tensor(shared), ids, mask, tags).item()

    assert loss(CAPTIONS[:2], REAL) < 0.2 * loss(CAPTIONS[:2], SYNTHETIC)
    assert loss(SYNTHETIC_CAPTIONS, SYNTHETIC) < 0.2 * loss(SYNTHETIC_CAPTIONS, REAL)
    assert model.generate(shared, max_new_tokens=16) == CAPTIONS[:2]
