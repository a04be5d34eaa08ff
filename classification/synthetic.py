"""A built-in classification set that is not saturated: small shapes on photographs.

Digits are too easy for distillation to show anything: a tiny student reaches the teacher's
accuracy alone. `write_shapes_folder` writes an image folder (`<root>/labelled/<class>/*.png`,
the layout `classification.data.load_image_folder` reads) of 32×32 images, one object each
among six classes that differ in outline only: circle, ring, square, frame, triangle and cross.
Each object has a random size (a third to three quarters of the image), position, rotation and
colour, and shares the image with clutter (lines, specks, a hollow outline) on a random crop of
the two photographs scikit-learn ships, with sensor noise. `unlabeled` more images of the same
kind, without labels, go to `<root>/unlabeled/`. The same seed writes the same bytes, the
labelled images whatever `unlabeled` is.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: The classes, one subfolder each.
SHAPES = ("circle", "ring", "square", "frame", "triangle", "cross")
LABELLED, UNLABELED, MARKER = "labelled", "unlabeled", "dataset.json"
_DRAWN = 4  # drawn at 4× the image side, then downsampled (anti-aliasing)


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    """Size of the generated set.

    Attributes:
        per_class: labelled images of each class.
        unlabeled: unlabelled images (random classes), in `unlabeled/`.
        image_size: side of the square images.
        seed: the same seed writes the same bytes.
    """

    per_class: int = 1000
    unlabeled: int = 0
    image_size: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.per_class < 2 or self.unlabeled < 0 or self.image_size < 16:
            raise ValueError(
                "Expected per_class >= 2, unlabeled >= 0 and image_size >= 16. Received: "
                f"per_class={self.per_class}, unlabeled={self.unlabeled}, "
                f"image_size={self.image_size}."
            )


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, np.uint8) for image in load_sample_images().images]


def _background(photos, side: int, rng: np.random.Generator) -> Image.Image:
    photo = photos[int(rng.integers(len(photos)))]
    height, width = photo.shape[:2]
    crop = int(rng.integers(side, min(height, width) // 2))
    top, left = int(rng.integers(0, height - crop)), int(rng.integers(0, width - crop))
    patch = photo[top : top + crop, left : left + crop].astype(np.float32)
    patch = patch * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30)
    image = Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8))
    return image.resize((side, side), Image.BILINEAR)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _polygon(centre, radius: float, corners: int, angle: float) -> list[tuple[float, float]]:
    return [
        (
            centre[0] + radius * math.cos(angle + 2 * math.pi * k / corners),
            centre[1] + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, centre, radius, angle, colour) -> None:
    thickness = max(2, int(radius * 0.35))
    x, y = centre
    if kind in ("circle", "ring"):
        box = (x - radius, y - radius, x + radius, y + radius)
        if kind == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=thickness)
    elif kind in ("square", "frame"):
        corners = _polygon(centre, radius * 1.2, 4, angle)
        if kind == "square":
            draw.polygon(corners, fill=colour)
        else:
            draw.line([*corners, corners[0]], fill=colour, width=thickness, joint="curve")
    elif kind == "triangle":
        draw.polygon(_polygon(centre, radius * 1.3, 3, angle), fill=colour)
    else:  # cross: two bars through the centre
        for turn in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(turn), radius * math.sin(turn)
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=colour, width=thickness)


def _clutter(draw: ImageDraw.ImageDraw, side: int, rng: np.random.Generator) -> None:
    for _ in range(int(rng.integers(1, 4))):
        x0, y0, x1, y1 = rng.uniform(0, side, 4)
        draw.line((x0, y0, x1, y1), fill=_colour(rng), width=int(rng.integers(2, 2 * _DRAWN)))
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, side, 2)
        r = rng.uniform(2, 2 * _DRAWN)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rng))
    if rng.random() < 0.5:
        x, y = rng.uniform(0, side, 2)
        r = rng.uniform(side / 10, side / 4)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=_colour(rng), width=_DRAWN)


def render(kind: str, config: ShapesConfig, photos, rng: np.random.Generator) -> Image.Image:
    """One image of a `kind` object."""
    side = config.image_size * _DRAWN
    image = _background(photos, side, rng)
    draw = ImageDraw.Draw(image)
    _clutter(draw, side, rng)
    radius = side * rng.uniform(1 / 6, 3 / 8)
    margin = radius * 1.1
    centre = tuple(rng.uniform(margin, side - margin, 2))
    _draw_shape(draw, kind, centre, radius, rng.uniform(0, 2 * math.pi), _colour(rng))
    image = image.resize((config.image_size, config.image_size), Image.BILINEAR)
    pixels = np.asarray(image, np.float32) + rng.normal(0.0, 8.0, (*image.size[::-1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shapes_folder(root: str | os.PathLike, config: ShapesConfig = ShapesConfig()) -> Path:
    """Writes the set to `root` (which must not exist), complete or not at all; returns it."""
    root = Path(root)
    if root.exists():
        raise FileExistsError(
            f"Refusing to overwrite an existing folder. Remove it or choose another path. "
            f"Received: root={str(root)!r}."
        )
    photos = _photos()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        for index, kind in enumerate(SHAPES):
            rng = np.random.default_rng([config.seed, index])
            folder = staging / LABELLED / kind
            folder.mkdir(parents=True)
            for number in range(config.per_class):
                image = render(kind, config, photos, rng)
                (folder / f"{kind}_{number:05d}.png").write_bytes(_png(image))
        if config.unlabeled:
            rng = np.random.default_rng([config.seed, len(SHAPES)])
            (staging / UNLABELED).mkdir()
            for number in range(config.unlabeled):
                kind = SHAPES[int(rng.integers(len(SHAPES)))]
                image = render(kind, config, photos, rng)
                (staging / UNLABELED / f"frame_{number:05d}.png").write_bytes(_png(image))
        (staging / MARKER).write_text(json.dumps(dataclasses.asdict(config)) + "\n")
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def ensure_shapes_folder(root: str | os.PathLike, config: ShapesConfig = ShapesConfig()) -> Path:
    """`root` holding the set of `config`: written when missing or made with other settings."""
    root = Path(root)
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == dataclasses.asdict(config):
        return root
    fresh = write_shapes_folder(root.with_name(f".{root.name}.new"), config)
    if root.exists():
        stale = root.with_name(f".{root.name}.old")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(root, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(fresh, root)
    return root


__all__ = ["SHAPES", "ShapesConfig", "ensure_shapes_folder", "render", "write_shapes_folder"]
