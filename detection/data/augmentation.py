"""Detection augmentation: box-aware geometry with albumentations, colour jitter on whole batches.

Geometry (horizontal flip, scale/crop) moves the boxes with the pixels, so it runs per image
through albumentations. Colour jitter leaves boxes alone and is a per-image affine map of the RGB
values, so it runs in-graph on a whole batch (`apply_colour_jitter`) from factors drawn per image
(`sample_colour_factors`); this keeps the per-image Python work, which holds the GIL, small.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import tensorflow as tf

# RGB -> YIQ (luma, two chroma axes); hue is a rotation and saturation a scale of the chroma plane.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
IDENTITY_COLOUR = (1.0, 1.0, 1.0, 0.0)


def build_augmentation(
    image_size: tuple[int, int],
    flip: float = 0.5,
    scale: tuple[float, float] = (0.6, 1.0),
    crop: float = 0.5,
    min_visibility: float = 0.4,
    seed: int | None = None,
) -> A.Compose:
    """An albumentations pipeline of flip and scale/crop that moves the boxes with the pixels.

    Boxes are `pascal_voc` (`x_min, y_min, x_max, y_max` pixels) with a `classes` label field; a
    box left with less than `min_visibility` of its area after the crop is dropped (its object is
    mostly cut away).

    Args:
        image_size: `(height, width)` of the images (kept).
        flip: probability of a horizontal flip.
        scale: area fraction range of the random crop, resized back to `image_size`.
        crop: probability of the random scale/crop.
        min_visibility: see above.
        seed: seed of albumentations' generator.
    """
    height, width = image_size
    transforms = [
        A.HorizontalFlip(p=flip),
        A.RandomResizedCrop(size=(height, width), scale=scale, ratio=(0.8, 1.25), p=crop),
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


def sample_colour_factors(
    rng: np.random.Generator,
    count: int,
    probability: float = 0.8,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.3,
    hue: float = 0.05,
) -> np.ndarray:
    """Per-image colour jitter factors `[count, 4]` for `apply_colour_jitter`.

    Each image is jittered with `probability`; its brightness, contrast and saturation factors are
    uniform in `[1 - x, 1 + x]` and its hue shift uniform in `[-hue, hue]` turns. Images left
    alone get `IDENTITY_COLOUR`.
    """
    low = np.array([1 - brightness, 1 - contrast, 1 - saturation, -hue], np.float32)
    high = np.array([1 + brightness, 1 + contrast, 1 + saturation, hue], np.float32)
    factors = rng.uniform(low, high, size=(count, 4)).astype(np.float32)
    factors[rng.random(count) >= probability] = IDENTITY_COLOUR
    return factors


def apply_colour_jitter(images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter of a batch of images in `[0, 1]`.

    With per-image factors `(b, c, s, h)` and luma `Y(x) = 0.299 r + 0.587 g + 0.114 b`:

        x1 = b · x                                        (brightness)
        x2 = c · (x1 − mean Y(x1)) + mean Y(x1)           (contrast about the mean luma)
        x3 = YIQ⁻¹ · diag(1, s, s) · R(2π h) · YIQ · x2    (saturation and hue, luma kept)
        out = clip(x3, 0, 1)

    where `R` rotates the chroma (I, Q) plane. `(1, 1, 1, 0)` leaves the image unchanged.

    Args:
        images: float `[n, h, w, 3]` RGB in `[0, 1]`.
        factors: float `[n, 4]`, e.g. from `sample_colour_factors`.
    """
    factors = tf.convert_to_tensor(factors, tf.float32)
    bright, contrast, saturation, hue = tf.unstack(factors, axis=-1)
    x = images * bright[:, None, None, None]
    luma = tf.tensordot(x, tf.constant(_RGB_TO_YIQ[0]), axes=[[3], [0]])
    mean = tf.reduce_mean(luma, axis=[1, 2])[:, None, None, None]
    x = (x - mean) * contrast[:, None, None, None] + mean
    angle = 2.0 * np.pi * hue
    cos, sin = saturation * tf.cos(angle), saturation * tf.sin(angle)
    one, zero = tf.ones_like(cos), tf.zeros_like(cos)
    chroma = tf.stack(
        [tf.stack([one, zero, zero], -1), tf.stack([zero, cos, -sin], -1),
         tf.stack([zero, sin, cos], -1)],
        axis=1,
    )  # fmt: skip
    matrix = tf.constant(_YIQ_TO_RGB) @ chroma @ tf.constant(_RGB_TO_YIQ)
    x = tf.einsum("nhwc,ndc->nhwd", x, matrix)
    return tf.clip_by_value(x, 0.0, 1.0)
