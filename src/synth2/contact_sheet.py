"""Contact sheets: a grid of images with a caption under each, for people to look at."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synth2.io import atomic_path

SCALE = 4  # 32 px scenes become 128 px tiles
CAPTION_LINES = 3
LINE_HEIGHT = 12
COLUMNS = 4


def contact_sheet(images: np.ndarray, captions: list[str], path: Path | str, columns: int = COLUMNS) -> None:
    """Write a PNG grid of uint8 [N, H, W, 3] images, each above its (wrapped) caption."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    n, h, w, _ = images.shape
    tile_w, tile_h = w * SCALE, h * SCALE + CAPTION_LINES * LINE_HEIGHT + 6
    rows = -(-n // columns)
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    chars_per_line = max(8, tile_w // 6)
    for i, (image, text) in enumerate(zip(images, captions)):
        x, y = (i % columns) * tile_w, (i // columns) * tile_h
        sheet.paste(Image.fromarray(image).resize((w * SCALE, h * SCALE), Image.Resampling.NEAREST), (x, y))
        for k, line in enumerate(textwrap.wrap(text, chars_per_line)[:CAPTION_LINES]):
            draw.text((x + 3, y + h * SCALE + 3 + k * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
