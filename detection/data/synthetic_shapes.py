"""A built-in detection dataset: coloured shapes on real photographs, written in COCO format.

The backgrounds are random crops, flips and colour shifts of the two photographs scikit-learn
ships (`sklearn.datasets.load_sample_images`), so nothing is downloaded. Objects of four classes
vary in scale (COCO small and medium, a few large), overlap each other (occlusion) and share the
image with clutter (lines, specks and outline shapes that are not objects). The same seed writes
the same files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kd_keras.io import atomic_write_bytes, atomic_write_json

CLASS_NAMES = ("circle", "square", "triangle", "cross")
SPLITS = ("train", "val")
UNLABELED = "unlabeled"  # the folder of images without annotations
MODES = ("standard", "small_dense")


def _backgrounds() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, np.uint8) for image in load_sample_images().images]


def _background(photos, size: int, rng: np.random.Generator) -> Image.Image:
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    crop = int(rng.integers(size // 2, min(height, width)))
    top, left = int(rng.integers(0, height - crop)), int(rng.integers(0, width - crop))
    patch = photo[top : top + crop, left : left + crop].astype(np.float32)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = patch[..., rng.permutation(3)] if rng.random() < 0.3 else patch
    patch = patch * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30)
    image = Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8))
    return image.resize((size, size), Image.BILINEAR)


def _draw_object(draw, kind: str, box, colour, outline) -> None:
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=colour, outline=outline, width=2)
    elif kind == "square":
        draw.rectangle(box, fill=colour, outline=outline, width=2)
    elif kind == "triangle":
        draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=colour, outline=outline)
    else:  # cross
        w, h = x1 - x0, y1 - y0
        draw.rectangle((x0 + w / 3, y0, x1 - w / 3, y1), fill=colour)
        draw.rectangle((x0, y0 + h / 3, x1, y1 - h / 3), fill=colour)


def _clutter(draw, size: int, rng: np.random.Generator) -> None:
    """Things that are not objects: lines, specks and hollow outlines."""
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        x0, y0 = rng.uniform(0, size, 2)
        if kind == 0:
            x1, y1 = rng.uniform(0, size, 2)
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 3)))
        elif kind == 1:
            r = rng.uniform(1, 3)
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
        else:
            r = rng.uniform(4, size / 6)
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), outline=colour, width=1)


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _image(photos, size: int, rng: np.random.Generator, mode: str = "standard"):
    image = _background(photos, size, rng)
    draw = ImageDraw.Draw(image)
    _clutter(draw, size, rng)
    objects = []
    dense = mode == "small_dense"
    for _ in range(int(rng.integers(6, 15) if dense else rng.integers(1, 6))):
        if dense:  # many small objects of about the same size: a fifth of the image side
            side = float(size * rng.uniform(0.15, 0.25))
        else:
            # Log-uniform side: mostly COCO "small" (< 32 px) and "medium", a few "large".
            side = float(np.exp(rng.uniform(math.log(8), math.log(size * 0.8))))
        aspect = rng.uniform(0.7, 1.4)
        w, h = min(size - 2, side * aspect), min(size - 2, side / aspect)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        box = (x0, y0, x0 + w, y0 + h)
        # Overlap is allowed (occlusion) but never so much that an object is hidden.
        if any(_iou(box, other) > 0.3 for other, _ in objects):
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        outline = tuple(int(v) for v in rng.integers(0, 256, 3))
        _draw_object(draw, CLASS_NAMES[label], box, colour, outline)
        objects.append((box, label))
    return image, objects


def generate_shapes_dataset(
    root: str | os.PathLike,
    num_train: int = 480,
    num_val: int = 120,
    image_size: int = 128,
    seed: int = 0,
    num_unlabeled: int = 0,
    mode: str = "standard",
) -> dict[str, tuple[Path, Path]]:
    """Writes `root/{train,val}/*.jpg` and `root/annotations/instances_{train,val}.json`.

    Args:
        root: output folder (created).
        num_train: training images.
        num_val: validation images.
        image_size: side of the square images.
        seed: the same seed gives the same dataset.
        num_unlabeled: images like the training ones, without annotations, in
            `root/unlabeled/` (from a generator of their own: the annotated images are the same
            with or without them).
        mode: `"standard"` (1 to 5 objects of any scale) or `"small_dense"` (6 to 14 objects
            per image, each a fifth of the side: 40 px boxes in 200 px images, as in a small
            set of real photos of small, packed parts).

    Returns:
        `{"train": (images_dir, annotations_file), "val": (...)}`.
    """
    if image_size < 32:
        raise ValueError(f"Expected image_size >= 32. Received: image_size={image_size!r}.")
    if mode not in MODES:
        raise ValueError(f"Expected mode in {MODES}. Received: mode={mode!r}.")
    root = Path(root)
    photos = _backgrounds()
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASS_NAMES)]
    result = {}
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
        rng = np.random.default_rng([seed, split_index])
        images, annotations = [], []
        (root / split).mkdir(parents=True, exist_ok=True)
        for image_id in range(1, count + 1):
            image, objects = _image(photos, image_size, rng, mode)
            name = f"{split}_{image_id:05d}.jpg"
            buffer = _jpeg(image)
            atomic_write_bytes(root / split / name, buffer)
            images.append(
                {"id": image_id, "file_name": name, "width": image_size, "height": image_size}
            )
            for box, label in objects:
                x0, y0, x1, y1 = (round(v, 2) for v in box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                        "area": round((x1 - x0) * (y1 - y0), 2),
                        "iscrowd": 0,
                    }
                )
        annotations_file = root / "annotations" / f"instances_{split}.json"
        atomic_write_json(
            annotations_file,
            {"images": images, "annotations": annotations, "categories": categories},
        )
        result[split] = (root / split, annotations_file)
    settings = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}
    if num_unlabeled:
        rng = np.random.default_rng([seed, len(SPLITS)])
        (root / UNLABELED).mkdir(parents=True, exist_ok=True)
        for index in range(1, num_unlabeled + 1):
            image, _ = _image(photos, image_size, rng, mode)
            atomic_write_bytes(root / UNLABELED / f"unlabeled_{index:05d}.jpg", _jpeg(image))
        settings["num_unlabeled"] = num_unlabeled
    if mode != "standard":
        settings["mode"] = mode
    atomic_write_bytes(root / "dataset.json", json.dumps(settings).encode())
    return result


def ensure_shapes_dataset(root: str | os.PathLike, **kwargs) -> dict[str, tuple[Path, Path]]:
    """Generates the dataset unless `root` already holds one made with the same settings."""
    root = Path(root)
    marker = root / "dataset.json"
    settings = {"num_train": 480, "num_val": 120, "image_size": 128, "seed": 0, **kwargs}
    # Folders written before the pool and the modes existed match their defaults.
    if not settings.get("num_unlabeled"):
        settings.pop("num_unlabeled", None)
    if settings.get("mode") == "standard":
        settings.pop("mode")
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return {
            split: (root / split, root / "annotations" / f"instances_{split}.json")
            for split in SPLITS
        }
    return generate_shapes_dataset(root, **settings)


def _jpeg(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
