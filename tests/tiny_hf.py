"""Tiny random Hugging Face models and a tiny COCO-format dataset, built locally for offline tests.

Every model is saved with `save_pretrained` into a folder, so the real-model profile's loading code
(`from_pretrained` on a local directory) runs exactly as it would on a downloaded checkpoint. Sizes are
the smallest that keep each architecture's shape rules; nothing here is trained.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synth2.models.tokenizer import build_tokenizer

# A chat template in the Llama style: <bos>, the user's words, then the assistant's cue.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %} caption:{% endif %}"
)
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
PLACES = ("on a table", "in a park", "near a wall", "on the street", "in a room")
EMBED_DIM = 32  # CLIP projection dim = Kandinsky prior embedding dim
CLIP_IMAGE_SIZE = 32


def save_causal_lm(directory: Path, arch: str, vocabulary_texts: Sequence[str], chat_template: bool = False) -> Path:
    """A random GPT-2 or Llama with a word-level tokenizer covering `vocabulary_texts`."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(vocabulary_texts)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4, **ids)
        )
    elif arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            **ids,
        )
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(arch)
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def clip_vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=CLIP_IMAGE_SIZE,
        patch_size=8,
        projection_dim=EMBED_DIM,
    )


def clip_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}
    )


def save_clip_vision(directory: Path) -> Path:
    """A random CLIPVisionModelWithProjection and its CLIPImageProcessor, in one folder."""
    from transformers import CLIPVisionModelWithProjection

    torch.manual_seed(0)
    CLIPVisionModelWithProjection(clip_vision_config()).save_pretrained(directory)
    clip_image_processor().save_pretrained(directory)
    return directory


def clip_tokenizer(max_length: int = 77):
    """A CLIP BPE tokenizer with a hand-made vocabulary: single characters, no merges."""
    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + ".,'-"
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    tokenizer.model_max_length = max_length
    return tokenizer


def save_kandinsky_prior(directory: Path) -> Path:
    """A random KandinskyV22PriorPipeline: CLIP text and vision parts, a PriorTransformer, UnCLIP schedule."""
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=EMBED_DIM,
            projection_dim=EMBED_DIM,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=1,
        embedding_dim=EMBED_DIM,
        num_embeddings=tokenizer.model_max_length,
    )
    with torch.no_grad():  # clip_std starts at zero, which would map every sample to the mean
        prior.clip_std.fill_(1.0)
    pipeline = KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=CLIPVisionModelWithProjection(clip_vision_config()),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            num_train_timesteps=1000,
            clip_sample=True,
            clip_sample_range=10.0,
        ),
        image_processor=clip_image_processor(),
    )
    pipeline.save_pretrained(directory)
    return directory


def caption_of(colour: str, concept: str, place: str) -> str:
    return f"a {colour} {concept} {place}"


def truncate_image(path: Path) -> Path:
    """Cut an image file in half: its header still parses (PIL opens it), its pixels do not decode."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_coco_dataset(
    root: Path,
    concepts: Sequence[str],
    n_images: int,
    seed: int = 0,
    missing: int = 0,
    captions_per_image: int = 3,
    truncated: int = 0,
) -> tuple[Path, Path]:
    """A COCO captions JSON and an image folder of generated pictures; the last `missing` images are not written
    and the `truncated` images before them are cut short (see `truncate_image`).

    Returns (annotations path, image dir).
    """
    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n_images):
        image_id = 1000 + i
        file_name = f"{image_id:012d}.jpg"
        concept, colour = concepts[i % len(concepts)], COLOURS[rng.integers(len(COLOURS))]
        height, width = int(rng.integers(24, 48)), int(rng.integers(24, 48))  # COCO images vary in size
        if i < n_images - missing:
            pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image_dir / file_name, quality=90)
            if i >= n_images - missing - truncated:
                truncate_image(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for _ in range(captions_per_image):
            place = PLACES[rng.integers(len(PLACES))]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "caption": caption_of(colour, concept, place).capitalize() + ".",
                }
            )
    annotations_path = root / "captions.json"
    annotations_path.write_text(
        json.dumps({"info": {"description": "tiny"}, "images": images, "annotations": annotations})
    )
    return annotations_path, image_dir


def vocabulary(concepts: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every word the tiny LMs must know: captions of the dataset, concept names and prompt templates."""
    texts = [caption_of(c, k, p) + "." for c in COLOURS for k in concepts for p in PLACES]
    return texts + list(concepts) + [t.replace("{concepts}", "") for t in templates] + ["caption:"]


def save_kandinsky_decoder(directory: Path) -> Path:
    """A random KandinskyV22Pipeline (UNet conditioned on image embeddings, MoVQ, DDIM): embeddings -> pixels."""
    from diffusers import DDIMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=8,  # Kandinsky's UNet predicts mean and variance
        addition_embed_type="image",
        encoder_hid_dim=EMBED_DIM,
        encoder_hid_dim_type="image_proj",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=EMBED_DIM,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
        norm_num_groups=8,
    )
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq).save_pretrained(directory)
    return directory
