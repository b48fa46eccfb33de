"""Scenes of the shapes world and how they are drawn.

A scene is one coloured shape of a given size at one cell of a 3×3 grid, optionally with a second
(small) object in the neighbouring cell that a spatial relation names. Shapes are drawn at 4× the
target resolution and downsampled with antialiasing, so that a star stays distinguishable from a cross
at 32×32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
# "A left of B": the first (described) object sits in the cell left of the second.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 220, 40),
    "purple": (150, 60, 205),
    "orange": (245, 140, 30),
    "white": (235, 235, 235),
    "cyan": (40, 215, 225),
}
BACKGROUND = (22, 22, 26)
SUPERSAMPLE = 4
# Object radius as a fraction of the image side; large enough to tell shapes apart at 32 px.
RADIUS = {"small": 0.13, "large": 0.19}
SECOND_OBJECT_SIZE = "small"
CELL_CENTRES = (0.2, 0.5, 0.8)  # pulled inwards so corner objects are not clipped
RELATION_OFFSET = {"left of": (0, 1), "right of": (0, -1), "above": (1, 0), "below": (-1, 0)}


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    size: str
    position: str
    colour2: str | None = None
    shape2: str | None = None
    relation: str | None = None

    @property
    def combo(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def has_second(self) -> bool:
        return self.shape2 is not None

    def to_row(self) -> dict[str, str | None]:
        return asdict(self) | {"combo": self.combo}


def all_combos() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


def grid_cell(position: str) -> tuple[int, int]:
    index = POSITIONS.index(position)
    return divmod(index, 3)  # (row, col)


def second_position(position: str, relation: str) -> str | None:
    """The cell of the second object, or None when the relation would leave the grid."""
    row, col = grid_cell(position)
    d_row, d_col = RELATION_OFFSET[relation]
    row, col = row + d_row, col + d_col
    if not (0 <= row < 3 and 0 <= col < 3):
        return None
    return POSITIONS[row * 3 + col]


def sample_scene(rng: np.random.Generator, colour: str, shape: str, two_object_prob: float) -> Scene:
    """Sample size, position and an optional second object for a given colour and shape."""
    size = SIZES[rng.integers(len(SIZES))]
    if rng.random() >= two_object_prob:
        return Scene(colour, shape, size, POSITIONS[rng.integers(len(POSITIONS))])
    relation = RELATIONS[rng.integers(len(RELATIONS))]
    valid = [p for p in POSITIONS if second_position(p, relation) is not None]
    position = valid[rng.integers(len(valid))]
    colour2 = COLOURS[rng.integers(len(COLOURS))]
    shape2 = SHAPES[rng.integers(len(SHAPES))]
    return Scene(colour, shape, size, position, colour2, shape2, relation)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.42
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "cross":
        a = r * 0.34  # half the arm thickness
        return [
            (cx - a, cy - r),
            (cx + a, cy - r),
            (cx + a, cy - a),
            (cx + r, cy - a),
            (cx + r, cy + a),
            (cx + a, cy + a),
            (cx + a, cy + r),
            (cx - a, cy + r),
            (cx - a, cy + a),
            (cx - r, cy + a),
            (cx - r, cy - a),
            (cx - a, cy - a),
        ]
    raise ValueError(f"unknown shape {shape!r}")


def _draw_object(
    draw: ImageDraw.ImageDraw, shape: str, rgb: tuple[int, int, int], cx: float, cy: float, r: float
) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r), fill=rgb)


def render(scene: Scene, image_size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw a scene as uint8 [H, W, 3]. `rng` adds small jitter (position, size, colour, noise)."""
    big = image_size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    objects = [(scene.shape, scene.colour, scene.size, scene.position)]
    if scene.has_second:
        position2 = second_position(scene.position, scene.relation)
        objects.append((scene.shape2, scene.colour2, SECOND_OBJECT_SIZE, position2))
    for shape, colour, size, position in objects:
        row, col = grid_cell(position)
        cx, cy = CELL_CENTRES[col] * big, CELL_CENTRES[row] * big
        r = RADIUS[size] * big
        rgb = RGB[colour]
        if rng is not None:
            cx += rng.uniform(-0.03, 0.03) * big
            cy += rng.uniform(-0.03, 0.03) * big
            r *= rng.uniform(0.92, 1.08)
            rgb = tuple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in rgb)
        _draw_object(draw, shape, rgb, cx, cy, r)
    pixels = np.asarray(image.resize((image_size, image_size), Image.Resampling.LANCZOS), dtype=np.int16)
    if rng is not None:
        pixels = pixels + rng.integers(-4, 5, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)
