"""Decoding CenterNet outputs into boxes: 3×3 max-pool peaks, top-K, boxes in image coordinates.

`decode_detections` is a numpy post-process (for `.tflite` outputs on a robot, or Keras outputs);
`CenterNetDecoder` is the same step as a Keras layer, for an in-graph decoder (`add_decoder`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

_PACKAGE = "detection"


@dataclasses.dataclass(frozen=True)
class Detections:
    """Boxes of one image: `boxes` `[n, 4]` as `x_min, y_min, x_max, y_max` in input pixels,
    `scores` `[n]` (sigmoid of the peak), `classes` `[n]` class indices; sorted by score."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, scale_x: float, scale_y: float) -> Detections:
        """The boxes in another image size (e.g. the original image before resizing)."""
        factors = np.array([scale_x, scale_y, scale_x, scale_y], np.float32)
        return Detections(self.boxes * factors, self.scores, self.classes)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def peak_mask(heatmap: np.ndarray) -> np.ndarray:
    """Local maxima of a `[H, W, C]` map over each 3×3 window (the max-pool "NMS").

    A location is a peak when no neighbour is larger; among equal neighbours (plateaus, common
    after int8 quantization) only the first in raster order is kept, so a plateau gives one box.
    """
    height, width = heatmap.shape[:2]
    padded = np.pad(heatmap, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    peaks = np.ones(heatmap.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            earlier = dy < 0 or (dy == 0 and dx < 0)
            peaks &= heatmap > neighbour if earlier else heatmap >= neighbour
    return peaks


def decode_detections(
    heatmap_logits: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    stride: int = 4,
    top_k: int = 100,
    score_threshold: float = 0.05,
) -> list[Detections]:
    """Boxes from CenterNet outputs, one `Detections` per image.

    Args:
        heatmap_logits: `[batch, H, W, classes]` (or one image `[H, W, classes]`) logits.
        size: `[batch, H, W, 2]` box width and height in output units.
        offset: `[batch, H, W, 2]` centre offsets in output units.
        stride: output stride; boxes come back in input pixels.
        top_k: at most this many peaks per image.
        score_threshold: peaks below this probability are dropped.

    Returns:
        A list with one `Detections` per image.
    """
    heatmap_logits, size, offset = (
        np.asarray(a, np.float32) for a in (heatmap_logits, size, offset)
    )
    if heatmap_logits.ndim == 3:
        heatmap_logits, size, offset = heatmap_logits[None], size[None], offset[None]
    if heatmap_logits.ndim != 4 or size.shape[-1] != 2 or offset.shape[-1] != 2:
        raise ValueError(
            "Expected heatmap [batch, H, W, classes], size and offset [batch, H, W, 2]. Received: "
            f"shapes={heatmap_logits.shape}, {size.shape}, {offset.shape}."
        )
    results = []
    num_classes = heatmap_logits.shape[-1]
    for logits, sizes, offsets in zip(heatmap_logits, size, offset):
        scores = _sigmoid(logits)
        flat = np.where(peak_mask(logits), scores, 0.0).reshape(-1)
        k = min(top_k, flat.size)
        candidates = np.argpartition(-flat, k - 1)[:k]
        candidates = candidates[np.argsort(-flat[candidates], kind="stable")]
        candidates = candidates[flat[candidates] >= score_threshold]
        cell, classes = np.divmod(candidates, num_classes)
        ys, xs = np.divmod(cell, logits.shape[1])
        centre_x = (xs + offsets[ys, xs, 0]) * stride
        centre_y = (ys + offsets[ys, xs, 1]) * stride
        half_w = np.maximum(sizes[ys, xs, 0], 0.0) * stride / 2
        half_h = np.maximum(sizes[ys, xs, 1], 0.0) * stride / 2
        boxes = np.stack(
            [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1
        ).astype(np.float32)
        results.append(
            Detections(boxes.reshape(-1, 4), flat[candidates].astype(np.float32), classes)
        )
    return results


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CenterNetDecoder(keras.layers.Layer):
    """In-graph decoding: `[heatmap, size, offset]` to padded top-K boxes, scores and classes.

    Returns `boxes` `[b, top_k, 4]` (`x_min, y_min, x_max, y_max`, input pixels), `scores`
    `[b, top_k]` and `classes` `[b, top_k]` (int32). Peaks are locations equal to their 3×3
    max-pool; entries are sorted by score and not thresholded (filter on `scores`).
    """

    def __init__(self, stride: int = 4, top_k: int = 100, **kwargs):
        super().__init__(**kwargs)
        if stride < 1 or top_k < 1:
            raise ValueError(f"Expected stride, top_k >= 1. Received: {stride=}, {top_k=}.")
        self.stride = stride
        self.top_k = top_k

    def call(self, inputs):
        heatmap_logits, size, offset = inputs
        scores = tf.sigmoid(heatmap_logits)
        pooled = tf.nn.max_pool2d(scores, 3, 1, "SAME")
        scores = tf.where(tf.equal(scores, pooled), scores, tf.zeros_like(scores))
        shape = tf.shape(scores)
        width, classes = shape[2], shape[3]
        flat = tf.reshape(scores, [shape[0], -1])
        top_scores, indices = tf.math.top_k(flat, k=tf.minimum(self.top_k, tf.shape(flat)[1]))
        cell, label = indices // classes, indices % classes
        ys, xs = cell // width, cell % width
        positions = tf.stack([ys, xs], axis=-1)
        sizes = tf.gather_nd(size, positions, batch_dims=1)
        offsets = tf.gather_nd(offset, positions, batch_dims=1)
        centre_x = (tf.cast(xs, tf.float32) + offsets[..., 0]) * self.stride
        centre_y = (tf.cast(ys, tf.float32) + offsets[..., 1]) * self.stride
        half_w = tf.nn.relu(sizes[..., 0]) * self.stride / 2
        half_h = tf.nn.relu(sizes[..., 1]) * self.stride / 2
        boxes = tf.stack(
            [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1
        )
        return boxes, top_scores, label

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "top_k": self.top_k}


def add_decoder(model: keras.Model, stride: int = 4, top_k: int = 100) -> keras.Model:
    """`model` followed by `CenterNetDecoder`: outputs `boxes`, `scores`, `classes`."""
    boxes, scores, classes = CenterNetDecoder(stride, top_k, name="decoder")(model.outputs)
    return keras.Model(model.inputs, [boxes, scores, classes], name=f"{model.name}_decoded")
