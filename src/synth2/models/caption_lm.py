"""The caption LM: a small GPT-2 trained from scratch on the text corpus, then prompted like any LLM.

Training examples are instruction-following pairs, `prompt + " " + caption + <eos>` (built by the
profile, e.g. synth2.world.prompts):

    "concepts: red star caption: a small red star in the top left<eos>"    (concept prompt)
    "caption: a big blue circle at the bottom<eos>"                           (unprompted)

The loss covers the caption and <eos> only; the prompt is masked with -100. The prompt is always given
at sampling time, so modelling it would spend capacity on the concept distribution (and on the constant
template words) that generation never uses; masking is also what instruction tuning of real LLMs does.

`generate_captions` works for any `AutoModelForCausalLM` with its tokenizer (this GPT-2, or a hub
GPT-2/Llama), so the captions stage has one code path for both profiles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase

from synth2.io import atomic_path, load_output, require_dir
from synth2.models.ddp import rank_rows
from synth2.models.training import TrainConfig, train
from synth2.pretrained import quiet_loading

log = logging.getLogger("synth2")

IGNORE_INDEX = -100  # label value that transformers' cross-entropy skips


@dataclass(frozen=True)
class CaptionExample:
    prompt: str
    caption: str

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.caption}"


@dataclass(frozen=True)
class CaptionLMConfig:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int  # context length: prompt + caption + eos; longer examples are truncated


def build_caption_lm(tokenizer: PreTrainedTokenizerBase, config: CaptionLMConfig) -> GPT2LMHeadModel:
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
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
    model = GPT2LMHeadModel(gpt2)
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


def training_config(steps: int, batch_size: int, lr: float) -> TrainConfig:
    """nanoGPT's optimiser settings for small models: beta2 0.99, weight decay 0.01, clip at 1."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, betas=(0.9, 0.99), weight_decay=0.01, grad_clip=1.0)


def train_caption_lm(
    examples: Sequence[CaptionExample],
    tokenizer: PreTrainedTokenizerBase,
    config: CaptionLMConfig,
    training: TrainConfig,
    seed: int,
) -> tuple[GPT2LMHeadModel, list[float]]:
    """Train a fresh GPT-2 on the examples; returns the model (in eval mode) and the loss of every step."""
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(seed)
    model = build_caption_lm(tokenizer, config)
    input_ids, labels, lengths = encode_examples(examples, tokenizer, config.n_positions)
    attention_mask = torch.arange(input_ids.shape[1]) < lengths[:, None]
    sampler = torch.Generator().manual_seed(seed)

    def batch_loss(step: int, net: torch.nn.Module) -> torch.Tensor:
        idx = rank_rows(torch.randint(len(examples), (training.batch_size,), generator=sampler))
        width = int(lengths[idx].max())  # pad only to the longest example in this batch
        return net(
            input_ids=input_ids[idx, :width],
            attention_mask=attention_mask[idx, :width].long(),
            labels=labels[idx, :width],
        ).loss

    log.info("caption LM: %d examples", len(examples))
    return model, train(model, batch_loss, training, "caption LM")


def save_caption_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path | str) -> None:
    """Write model and tokenizer into one directory, atomically, loadable with the Auto* classes."""
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


PROMPT_PREFIX_KEY = "synth2_prompt_prefix"  # in the model config: what generation puts before every prompt


def set_prompt_prefix(model: PreTrainedModel, prefix: str) -> None:
    """Record in the model's own config (saved with it) what to put before every prompt, e.g. a style
    control token it was trained with; a snapshot then tells its users how to prompt it."""
    if prefix:
        setattr(model.config, PROMPT_PREFIX_KEY, prefix)


def prompt_prefix(model: PreTrainedModel) -> str:
    """The prefix recorded by `set_prompt_prefix`, "" for any other model."""
    return getattr(model.config, PROMPT_PREFIX_KEY, "") or ""


def load_caption_lm(path: Path | str, **load_kwargs) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) saved by `save_caption_lm` (the caption_lm stage's output), in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = require_dir(path)

    def load() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        with quiet_loading():
            return AutoModelForCausalLM.from_pretrained(path, **load_kwargs), AutoTokenizer.from_pretrained(path)

    model, tokenizer = load_output(path, "causal LM and tokenizer", load)
    return model.eval(), tokenizer


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
