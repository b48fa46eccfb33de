"""The caption LM pieces: word-level tokenizer, instruction examples, training and sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from synth2.models.caption_lm import (
    CaptionLMConfig,
    generate_captions,
    save_caption_lm,
    train_caption_lm,
    training_config,
)
from synth2.models.tokenizer import build_tokenizer
from synth2.world.prompts import CONCEPT_KINDS, build_training_examples

COLOURS = ["red", "green", "blue"]
SHAPES = ["star", "circle", "square"]
POSITIONS = ["top left", "bottom right", "centre"]
PROMPT, UNPROMPTED = "concepts: {concepts} caption:", "caption:"
TINY_LM = CaptionLMConfig(n_layer=1, n_head=2, n_embd=48, n_positions=32)
TRAINING = training_config(steps=200, batch_size=32, lr=5e-3)


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    captions, colours, shapes = [], [], []
    for _ in range(n):
        colour, shape, pos = rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(POSITIONS)
        if rng.random() < 0.5:
            captions.append(f"a small {colour} {shape} in the {pos}")
        else:
            captions.append(f"{colour} {shape}, {pos}.")
        colours.append(str(colour))
        shapes.append(str(shape))
    return captions, colours, shapes


@pytest.fixture(scope="module")
def examples():
    captions, colours, shapes = corpus(400)
    return build_training_examples(captions, colours, shapes, PROMPT, UNPROMPTED, 0.2, np.random.default_rng(0))


@pytest.fixture(scope="module")
def trained(examples):
    tokenizer = build_tokenizer(text for e in examples for text in (e.prompt, e.caption))
    model, losses = train_caption_lm(examples, tokenizer, TINY_LM, TRAINING, seed=0)
    return model, tokenizer, losses


def test_tokenizer_round_trips_exactly_and_reloads(tmp_path):
    texts = ["a small red star in the top left", "red star, top-left.", "concepts: red star caption:", "caption:"]
    tokenizer = build_tokenizer(texts)
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # ":" is its own token, so the prompt words are shared with captions.
    assert tokenizer.tokenize("caption:") == ["▁caption", ":"]
    assert tokenizer.decode(tokenizer("A  Small RED star")["input_ids"], skip_special_tokens=True) == "a small red star"
    assert tokenizer("a purple star")["input_ids"][2] == tokenizer.unk_token_id

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert [reloaded.pad_token_id, reloaded.unk_token_id, reloaded.bos_token_id, reloaded.eos_token_id] == [0, 1, 2, 3]
    for text in texts:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert reloaded.decode(reloaded(text)["input_ids"], skip_special_tokens=True) == text


def test_training_examples_cover_all_concept_kinds(examples):
    unprompted = [e for e in examples if e.prompt == UNPROMPTED]
    assert 0.1 < len(unprompted) / len(examples) < 0.3
    kinds = set()
    for e in examples:
        if e.prompt == UNPROMPTED:
            continue
        concepts = e.prompt.removeprefix("concepts: ").removesuffix(" caption:")
        assert concepts in e.caption  # the concept is the caption's own colour/shape/combination
        kinds.add("combo" if " " in concepts else "colour" if concepts in COLOURS else "shape")
    assert kinds == set(CONCEPT_KINDS)


def test_caption_lm_learns_and_generates_captions_without_prompt(trained):
    model, tokenizer, losses = trained
    assert len(losses) == TRAINING.steps
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    prompts = ["concepts: red star caption:", "caption:", "concepts: blue caption:"] * 4
    captions = generate_captions(model, tokenizer, prompts, max_new_tokens=12, batch_size=5, seed=0)
    assert len(captions) == len(prompts)
    assert all(isinstance(c, str) and c and "\n" not in c for c in captions)
    assert not any("caption:" in c or "concepts" in c for c in captions)


def test_generation_is_deterministic_with_a_seed(trained):
    model, tokenizer, _ = trained
    prompts = ["concepts: green caption:", "caption:"] * 8
    first = generate_captions(model, tokenizer, prompts, max_new_tokens=12, seed=3)
    assert generate_captions(model, tokenizer, prompts, max_new_tokens=12, seed=3) == first
    assert generate_captions(model, tokenizer, prompts, max_new_tokens=12, seed=4) != first


def test_left_padded_batches_match_single_prompts(trained):
    # Near-zero temperature is greedy decoding: batching must not change what a prompt yields, which
    # fails if padding sits on the right or position ids ignore the padding.
    model, tokenizer, _ = trained
    prompts = ["caption:", "concepts: red star caption:", "concepts: circle caption:", "concepts: blue caption:"]
    batched = generate_captions(model, tokenizer, prompts, temperature=1e-4, max_new_tokens=12, batch_size=4)
    single = [generate_captions(model, tokenizer, [p], temperature=1e-4, max_new_tokens=12)[0] for p in prompts]
    assert len(set(single)) > 1  # the prompt matters, else this test could not see a padding bug
    assert batched == single


def test_saved_caption_lm_reloads_with_auto_classes(trained, tmp_path):
    model, tokenizer, _ = trained
    save_caption_lm(model, tokenizer, tmp_path / "caption_lm")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "caption_lm")
    retok = AutoTokenizer.from_pretrained(tmp_path / "caption_lm")
    prompts = ["concepts: red caption:", "caption:"]
    assert generate_captions(reloaded, retok, prompts, seed=1) == generate_captions(model, tokenizer, prompts, seed=1)


def test_generate_captions_works_for_another_architecture_without_pad_token(trained):
    # The real profile hands in hub LMs (Llama, GPT-2) whose tokenizers may lack a pad token.
    _, tok, _ = trained
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    llama = LlamaForCausalLM(config).eval()
    pad = tok.pad_token
    tok.pad_token = None
    assert tok.pad_token_id is None
    try:
        captions = generate_captions(llama, tok, ["caption:", "concepts: red star caption:"], max_new_tokens=5, seed=0)
    finally:
        tok.pad_token = pad
    assert len(captions) == 2 and all(isinstance(c, str) and "caption:" not in c for c in captions)
