"""The caption LM: a small GPT-2 trained from scratch on the text corpus, then prompted like any LLM.

Training examples are instruction-following pairs, `prompt + " " + caption + <eos>`:

    "concepts: red star caption: a small red star in the top left<eos>"    (concept prompt)
    "caption: a big blue circle at the bottom<eos>"                           (unprompted)

A concept is the caption's colour-shape combination ("red star"), its colour ("red") or its shape
("star"), one third each, so the LM follows all three kinds of prompt. A fraction `unprompted_fraction`
uses the bare `unprompted_template`: those examples teach the corpus' own skewed caption distribution,
which the unbalanced ablation samples.

The loss covers the caption and <eos> only; the prompt is masked with -100. The prompt is always given
at sampling time, so modelling it would spend capacity on the concept distribution (and on the constant
template words) that generation never uses; masking is also what instruction tuning of real LLMs does.

`generate_captions` works for any `AutoModelForCausalLM` with its tokenizer (this GPT-2, or a hub
GPT-2/Llama), so the captions stage has one code path for both profiles.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from synth2.io import atomic_path
from synth2.models.tokenizer import build_tokenizer
from synth2.params import CaptionLMParams, CaptionsParams

log = logging.getLogger("synth2")

CONCEPT_KINDS = ("combo", "colour", "shape")
IGNORE_INDEX = -100  # label value that transformers' cross-entropy skips


@dataclass(frozen=True)
class CaptionExample:
    prompt: str
    caption: str

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.caption}"


def concept_text(colour: str, shape: str, kind: str) -> str:
    """The concept phrase a prompt names: "red star", "red" or "star"."""
    if kind == "combo":
        return f"{colour} {shape}"
    if kind == "colour":
        return colour
    if kind == "shape":
        return shape
    raise ValueError(f"unknown concept kind {kind!r}; expected one of {CONCEPT_KINDS}")


def build_training_examples(
    captions: Sequence[str],
    colours: Sequence[str],
    shapes: Sequence[str],
    templates: CaptionsParams,
    unprompted_fraction: float,
    rng: np.random.Generator,
) -> list[CaptionExample]:
    """One example per corpus caption; `colours`/`shapes` are the caption's (first object's) attributes."""
    if not len(captions) == len(colours) == len(shapes):
        raise ValueError(f"lengths differ: {len(captions)} captions, {len(colours)} colours, {len(shapes)} shapes")
    n = len(captions)
    unprompted = rng.random(n) < unprompted_fraction
    kinds = rng.integers(0, len(CONCEPT_KINDS), size=n)
    examples = []
    for caption, colour, shape, bare, kind in zip(captions, colours, shapes, unprompted, kinds):
        if bare:
            prompt = templates.unprompted_template
        else:
            concepts = concept_text(str(colour), str(shape), CONCEPT_KINDS[kind])
            prompt = templates.prompt_template.format(concepts=concepts)
        examples.append(CaptionExample(prompt=prompt, caption=str(caption).strip()))
    return examples


def build_caption_tokenizer(examples: Sequence[CaptionExample]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer whose vocabulary covers every prompt and caption word of the examples."""
    return build_tokenizer(text for example in examples for text in (example.prompt, example.caption))


def build_caption_lm(tokenizer: PreTrainedTokenizerBase, params: CaptionLMParams) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=params.n_positions,
        n_embd=params.n_embd,
        n_layer=params.n_layer,
        n_head=params.n_head,
        # No dropout, as in nanoGPT's small-data default: 50k short captions do not overfit 2 layers
        # in 1.5k steps, and dropout slows what little training we can afford on 2 cores.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # GPT-2's tanh-approximated GELU, as one fused op rather than the Python formula of "gelu_new".
        activation_function="gelu_pytorch_tanh",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    use_default_causal_lm_loss(model)
    return model


def use_default_causal_lm_loss(model: PreTrainedModel) -> None:
    """Name the causal-LM loss transformers falls back to anyway.

    transformers 5 infers the loss from the class name, which fails for `GPT2LMHeadModel`, and then
    warns on the first forward that it uses `ForCausalLMLoss`: same loss, minus the noise in stage logs.
    """
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"


def encode_examples(
    examples: Sequence[CaptionExample], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels, lengths); labels are -100 on the prompt and the padding.

    Prompt and caption are tokenised separately, so the split point is exact; the caption gets a leading
    space, as it has in `example.text`, so its first word is tokenised as a word after a space.
    """
    prompt_ids = tokenizer([e.prompt for e in examples])["input_ids"]
    caption_ids = tokenizer([" " + e.caption for e in examples], add_special_tokens=False)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    input_ids = torch.full((len(examples), max_length), pad, dtype=torch.long)
    labels = torch.full((len(examples), max_length), IGNORE_INDEX, dtype=torch.long)
    lengths = torch.zeros(len(examples), dtype=torch.long)
    n_truncated = 0
    for i, (p, c) in enumerate(zip(prompt_ids, caption_ids)):
        ids = (p + c + [eos])[:max_length]
        n_truncated += len(p) + len(c) + 1 > max_length
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, len(p) : len(ids)] = torch.tensor(ids[len(p) :], dtype=torch.long)
        lengths[i] = len(ids)
    if n_truncated:
        log.warning("%d of %d examples truncated to %d tokens", n_truncated, len(examples), max_length)
    return input_ids, labels, lengths


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the base learning rate: linear warmup, then cosine decay to `min_ratio` (nanoGPT)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_caption_lm(
    examples: Sequence[CaptionExample],
    tokenizer: PreTrainedTokenizerBase,
    params: CaptionLMParams,
    seed: int,
    log_every: int = 100,
) -> tuple[GPT2LMHeadModel, list[float]]:
    """Train a fresh GPT-2 on the examples; returns the model (in eval mode) and the loss of every step."""
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(seed)
    model = build_caption_lm(tokenizer, params)
    input_ids, labels, lengths = encode_examples(examples, tokenizer, params.n_positions)
    attention_mask = torch.arange(input_ids.shape[1]) < lengths[:, None]

    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = max(1, min(100, params.steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, params.steps, warmup))
    sampler = torch.Generator().manual_seed(seed)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("caption LM: %.2fM params, %d examples, %d steps", n_params / 1e6, len(examples), params.steps)

    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(params.steps):
        idx = torch.randint(len(examples), (params.batch_size,), generator=sampler)
        width = int(lengths[idx].max())  # pad only to the longest example in this batch
        loss = model(
            input_ids=input_ids[idx, :width],
            attention_mask=attention_mask[idx, :width].long(),
            labels=labels[idx, :width],
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == params.steps:
            recent = losses[-log_every:]
            log.info(
                "caption LM step %d/%d loss %.4f (%.1f s)",
                step + 1, params.steps, sum(recent) / len(recent), time.perf_counter() - start,
            )
    model.eval()
    return model, losses


def save_caption_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path | str) -> None:
    """Write model and tokenizer into one directory, atomically, loadable with the Auto* classes."""
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for sampling without disturbing the caller's RNG state."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def clean_generation(text: str) -> str:
    """First non-empty line, whitespace collapsed: a real LLM may run past the caption."""
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


@torch.inference_mode()
def generate_captions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    temperature: float = 1.0,
    top_p: float = 0.95,
    max_new_tokens: int = 24,
    batch_size: int = 256,
    seed: int = 0,
) -> list[str]:
    """Sample one caption per prompt (temperature + nucleus sampling, no top-k), without the prompt.

    Works for any causal LM: prompts are left-padded by hand (so a tokenizer without a pad token, like
    GPT-2's, needs no mutation), generation stops at the model's eos, and the prompt tokens are cut off
    before decoding. The same seed, prompts and batch size give the same captions.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("tokenizer has neither a pad nor an eos token; cannot batch prompts")
    device = model.device
    # Keep the model's own eos list (real checkpoints often have several); fall back to the tokenizer's.
    eos_id = model.generation_config.eos_token_id
    if eos_id is None:
        eos_id = tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    captions: list[str] = []
    with _seeded(seed, device):
        for start in range(0, len(prompts), batch_size):
            encoded = tokenizer(list(prompts[start : start + batch_size]))["input_ids"]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for i, ids in enumerate(encoded):
                # Left padding: every prompt ends at the same column, where generation continues.
                input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[i, width - len(ids) :] = 1
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            )
            new_tokens = output[:, width:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            captions.extend(clean_generation(text) for text in texts)
    model.train(was_training)
    return captions
