"""The VLM: a ClipCap-style prefix captioner (Mokady et al. 2021) over image embeddings.

An MLP maps one image embedding (dim D) to `prefix_length` vectors in the LM's input-embedding space;
the causal LM reads them through `inputs_embeds`, followed by the caption's token embeddings:

    [p_1 .. p_P] [w_1 .. w_T <eos>] [pad ...]      loss on w_1 .. <eos> only

The LM is loaded with `AutoModelForCausalLM.from_pretrained`, so it is our caption LM in the shapes
world and any hub checkpoint in the real profile. It is fine-tuned by default: a prototype with a frozen
tiny LM and only the mapper trained learned almost nothing in 1.5k steps, while fine-tuning did.
`freeze_lm=True` keeps it fixed (and in eval mode), as ClipCap does with a large pretrained GPT-2;
`unfreeze_top_layers=N` then trains its top N transformer blocks too (found generically: the module list
with one entry per hidden layer), the usual middle ground for a large LM on a small dataset.
Training runs on any device; on a GPU, `autocast_dtype` turns on mixed precision.

Embeddings are standardised with the real training set's per-dimension mean and std (kept as buffers
and saved with the mapper), so the mapper sees unit-scale inputs whatever the image encoder's scale.
Synthetic embeddings go through the same transform: they are meant to live in the real ones' space.

Source tags (`source_tags=True`, tagged back-translation, Caswell et al. 2019): a learned vector per
source of a pair, real or synthetic, is added to every prefix vector in training; captions are always
generated with the real tag. The synthetic captions are in the caption LM's style, the references in the
annotators'; the tag lets the VLM learn the content of synthetic pairs without learning to *write* like
them when asked for a real caption. Both vectors start at zero, so an untrained tag changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from synth2.io import MissingInputError, atomic_path
from synth2.models.caption_lm import IGNORE_INDEX, clean_generation, use_default_causal_lm_loss
from synth2.models.ddp import rank_rows
from synth2.models.pair_sampler import REAL, PairSampler
from synth2.models.training import TrainConfig, train

log = logging.getLogger("synth2")

CONFIG_FILE = "prefix_captioner.json"
MAPPER_FILE = "mapper.safetensors"
LM_SUBDIR = "lm"  # LM + tokenizer, loadable on their own with the Auto* classes

Pairs = tuple[np.ndarray | torch.Tensor, Sequence[str]]  # (embeddings [N, D], captions)


@dataclass(frozen=True)
class PrefixCaptionerConfig:
    embed_dim: int  # the image embedding's size
    prefix_length: int  # prefix vectors the mapper writes in front of the caption
    freeze_lm: bool
    unfreeze_top_layers: int  # with freeze_lm: the LM's top N blocks train too
    max_caption_tokens: int
    source_tags: bool = False  # a learned real/synthetic tag on the prefix (False in checkpoints before it)


class PrefixCaptioner(nn.Module):
    def __init__(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: PrefixCaptionerConfig) -> None:
        super().__init__()
        self.lm = lm
        use_default_causal_lm_loss(lm)
        self.tokenizer = tokenizer
        self.config = config
        embed_dim, prefix_length = config.embed_dim, config.prefix_length
        hidden = lm.get_input_embeddings().embedding_dim
        out = hidden * prefix_length
        # ClipCap's MLP: one tanh hidden layer halfway between input and output width.
        self.mapper = nn.Sequential(
            nn.Linear(embed_dim, (embed_dim + out) // 2),
            nn.Tanh(),
            nn.Linear((embed_dim + out) // 2, out),
        )
        self.register_buffer("emb_mean", torch.zeros(embed_dim))
        self.register_buffer("emb_std", torch.ones(embed_dim))
        self.source_tag = nn.Embedding(2, hidden) if config.source_tags else None
        if self.source_tag is not None:
            nn.init.zeros_(self.source_tag.weight)
        if config.freeze_lm:
            self.lm.requires_grad_(False)
            for block in self.unfrozen_blocks():
                block.requires_grad_(True)

    # --- plumbing -----------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.emb_mean.device

    def unfrozen_blocks(self) -> list[nn.Module]:
        """The LM's top blocks that train although the LM is frozen (none unless configured)."""
        n = self.config.unfreeze_top_layers if self.config.freeze_lm else 0
        return list(transformer_blocks(self.lm)[-n:]) if n else []

    def train(self, mode: bool = True) -> PrefixCaptioner:
        super().train(mode)
        if self.config.freeze_lm:
            self.lm.eval()  # a frozen LM keeps dropout off, as at inference
            for block in self.unfrozen_blocks():
                block.train(mode)
        return self

    def set_embedding_stats(self, embeddings: torch.Tensor) -> None:
        """Standardise inputs with these embeddings' per-dimension mean and std."""
        embeddings = embeddings.float()
        self.emb_mean.copy_(embeddings.mean(0))
        # A near-constant dimension would otherwise be blown up by a tiny std.
        self.emb_std.copy_(embeddings.std(0, unbiased=False).clamp_min(1e-3 * embeddings.std().item() + 1e-8))

    def prefix(self, image_emb: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """[B, D] image embeddings -> [B, P, H] prefix vectors in the LM's embedding dtype. `source` [B]
        tags each pair real or synthetic (default: real) when the model has source tags."""
        x = (image_emb.to(self.device, torch.float32) - self.emb_mean) / self.emb_std
        prefix_length = self.config.prefix_length
        prefix = self.mapper(x).view(-1, prefix_length, self.mapper[-1].out_features // prefix_length)
        if self.source_tag is not None:
            if source is None:
                source = torch.full((len(prefix),), REAL, dtype=torch.long)
            prefix = prefix + self.source_tag(source.to(self.device))[:, None, :]
        return prefix.to(self.lm.get_input_embeddings().weight.dtype)

    def encode_captions(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded caption ids + <eos> (no <bos>: the prefix starts the sequence) and attention mask."""
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        ids = self.tokenizer(list(captions), add_special_tokens=False)["input_ids"]
        ids = [(seq + [eos])[: self.config.max_caption_tokens] for seq in ids]
        width = max(len(seq) for seq in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, seq in enumerate(ids):
            input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[i, : len(seq)] = 1
        return input_ids, attention_mask

    # --- the model ----------------------------------------------------------------------------------

    def forward(
        self,
        image_emb: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy over the caption tokens (prefix and padding masked)."""
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        prefix = self.prefix(image_emb, source)
        tokens = self.lm.get_input_embeddings()(input_ids)
        batch, prefix_length = input_ids.shape[0], self.config.prefix_length
        prefix_mask = torch.ones(batch, prefix_length, dtype=attention_mask.dtype, device=self.device)
        # Mask by attention_mask, not by pad id: GPT-2-style tokenizers pad with <eos>, which is a label.
        labels = torch.cat(
            [
                torch.full((batch, prefix_length), IGNORE_INDEX, dtype=torch.long, device=self.device),
                input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX),
            ],
            dim=1,
        )
        return self.lm(
            inputs_embeds=torch.cat([prefix, tokens], dim=1),
            attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
            labels=labels,
        ).loss

    @torch.inference_mode()
    def generate(self, image_emb: np.ndarray | torch.Tensor, max_new_tokens: int = 24, batch_size: int = 256) -> list[str]:
        """Greedy caption per embedding. With only `inputs_embeds`, `generate` returns just the new tokens."""
        image_emb = torch.as_tensor(image_emb)
        was_training = self.training
        self.eval()
        eos = self.lm.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        captions: list[str] = []
        for start in range(0, len(image_emb), batch_size):
            prefix = self.prefix(image_emb[start : start + batch_size])
            output = self.lm.generate(
                inputs_embeds=prefix,
                attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
            )
            texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
            captions.extend(clean_generation(text) for text in texts)
        self.train(was_training)
        return captions

    # --- persistence --------------------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        """Mapper (+ embedding stats) as safetensors, config JSON, and the LM + tokenizer, atomically."""
        mapper_state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("lm.")}
        with atomic_path(path) as tmp:
            tmp.mkdir()
            save_file(mapper_state, str(tmp / MAPPER_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")
            self.lm.save_pretrained(tmp / LM_SUBDIR)
            self.tokenizer.save_pretrained(tmp / LM_SUBDIR)

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device = "cpu") -> PrefixCaptioner:
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / MAPPER_FILE).is_file():
            raise MissingInputError(f"{path} is not a saved prefix captioner (no {CONFIG_FILE} or {MAPPER_FILE})")
        config = PrefixCaptionerConfig(**json.loads((path / CONFIG_FILE).read_text()))
        lm = AutoModelForCausalLM.from_pretrained(path / LM_SUBDIR)
        tokenizer = AutoTokenizer.from_pretrained(path / LM_SUBDIR)
        model = cls(lm, tokenizer, config)
        missing, unexpected = model.load_state_dict(load_file(str(path / MAPPER_FILE)), strict=False)
        if unexpected or any(not k.startswith("lm.") for k in missing):
            raise MissingInputError(f"{path / MAPPER_FILE} does not match its config: missing {missing}, unexpected {unexpected}")
        return model.to(device).eval()


def transformer_blocks(lm: PreTrainedModel) -> nn.ModuleList:
    """The LM's stack of transformer blocks, bottom first, for any architecture (GPT-2's `h`, Llama's
    `layers`, ...): the module list with exactly one entry per hidden layer."""
    n_layers = lm.config.get_text_config().num_hidden_layers
    for module in lm.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"{type(lm).__name__}: no module list of {n_layers} transformer blocks found to unfreeze")


def training_config(steps: int, batch_size: int, lr: float) -> TrainConfig:
    """The caption LM's optimiser settings (beta2 0.99, weight decay 0.01, clip at 1)."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, betas=(0.9, 0.99), weight_decay=0.01, grad_clip=1.0)


def train_prefix_captioner(
    lm_dir: Path | str,
    real: Pairs,
    synthetic: Pairs | None,
    config: PrefixCaptionerConfig,
    training: TrainConfig,
    mix_ratio: float,
    seed: int,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype = torch.float32,
) -> tuple[PrefixCaptioner, list[float]]:
    """Train a prefix captioner on real pairs, plus synthetic ones if given.

    Every variant runs `training.steps` steps of `training.batch_size` pairs; with synthetic pairs a
    `mix_ratio` share of each batch is drawn from them (synth2.models.pair_sampler), so variants differ
    only in data. Returns the model in eval mode and the loss of every step. `device` places the model;
    on a GPU a half `autocast_dtype` runs the forward pass in mixed precision (see synth2.models.training).
    """
    real_emb, real_captions = torch.as_tensor(real[0]).float(), list(real[1])
    if len(real_emb) != len(real_captions) or not len(real_captions):
        raise ValueError(f"real pairs: {len(real_emb)} embeddings vs {len(real_captions)} captions")
    n_synthetic = 0
    if synthetic is not None:
        syn_emb, syn_captions = torch.as_tensor(synthetic[0]).float(), list(synthetic[1])
        if len(syn_emb) != len(syn_captions) or not len(syn_captions):
            raise ValueError(f"synthetic pairs: {len(syn_emb)} embeddings vs {len(syn_captions)} captions")
        if syn_emb.shape[1] != real_emb.shape[1]:
            raise ValueError(f"synthetic embeddings have dim {syn_emb.shape[1]}, real ones {real_emb.shape[1]}")
        n_synthetic = len(syn_captions)
    if real_emb.shape[1] != config.embed_dim:
        raise ValueError(f"real embeddings have dim {real_emb.shape[1]}, the config says {config.embed_dim}")
    sampler = PairSampler(
        len(real_captions), n_synthetic, mix_ratio, training.batch_size, torch.Generator().manual_seed(seed)
    )

    torch.manual_seed(seed)
    model = PrefixCaptioner(AutoModelForCausalLM.from_pretrained(lm_dir), AutoTokenizer.from_pretrained(lm_dir), config)
    model.set_embedding_stats(real_emb)
    model.to(device)

    # The sampler's pool, tokenised once: synthetic rows follow the real ones (only if any are drawn).
    embeddings, captions = real_emb, real_captions
    if sampler.synthetic_per_batch:
        embeddings, captions = torch.cat([real_emb, syn_emb]), real_captions + syn_captions
    input_ids, attention_mask = model.encode_captions(captions)
    lengths = attention_mask.sum(1)
    batches = iter(sampler)

    def batch_loss(step: int, net: nn.Module) -> torch.Tensor:
        batch = next(batches)
        rows, source = rank_rows(batch.rows, batch.source)  # this process's share of the global batch
        width = int(lengths[rows].max())
        return net(embeddings[rows], input_ids[rows, :width], attention_mask[rows, :width], source)

    log.info(
        "prefix captioner: %d real + %d synthetic pairs, %d + %d per batch",
        len(real_captions),
        len(captions) - len(real_captions),
        sampler.real_per_batch,
        sampler.synthetic_per_batch,
    )
    losses = train(model, batch_loss, training, "prefix captioner", device, autocast_dtype)
    return model, losses
