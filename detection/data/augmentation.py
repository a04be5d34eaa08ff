"""Box-aware augmentation with albumentations: horizontal flip, scale/crop and colour."""

from __future__ import annotations

import albumentations as A
import numpy as np


def build_augmentation(
    image_size: tuple[int, int],
    flip: float = 0.5,
    scale: tuple[float, float] = (0.6, 1.0),
    crop: float = 0.5,
    colour: float = 0.8,
    min_visibility: float = 0.4,
    seed: int | None = None,
) -> A.Compose:
    """An albumentations pipeline that moves the boxes with the pixels.

    Boxes are `pascal_voc` (`x_min, y_min, x_max, y_max` pixels) with a `classes` label field; a
    box left with less than `min_visibility` of its area after the crop is dropped (its object is
    mostly cut away).

    Args:
        image_size: `(height, width)` of the images (kept).
        flip: probability of a horizontal flip.
        scale: area fraction range of the random crop, resized back to `image_size`.
        crop: probability of the random scale/crop.
        colour: probability of brightness, contrast, saturation and hue jitter.
        min_visibility: see above.
        seed: seed of albumentations' generator.
    """
    height, width = image_size
    transforms = [
        A.HorizontalFlip(p=flip),
        A.RandomResizedCrop(size=(height, width), scale=scale, ratio=(0.8, 1.25), p=crop),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=colour),
    ]
    return A.Compose(
        transforms,
        bbox_params=A.BboxParams(
            format="pascal_voc", label_fields=["classes"], min_visibility=min_visibility
        ),
        seed=seed,
    )


def apply_augmentation(
    augmentation: A.Compose, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs `augmentation` on a uint8 image and its boxes; returns the new image, boxes, classes."""
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    out = augmentation(image=image, bboxes=boxes[keep], classes=np.asarray(classes)[keep])
    new_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
    return out["image"], new_boxes, np.asarray(out["classes"], np.int64).reshape(-1)
