"""Decoding CenterNet outputs into boxes: 3×3 local-maximum peaks, top-K, boxes in input pixels.

`decode_detections` is a numpy post-process (for `.tflite` outputs on a robot, or Keras outputs);
`CenterNetDecoder` is the same step as a Keras layer, for an in-graph decoder (`add_decoder`).
Both follow one rule, so they return the same peaks in the same order:

- Peaks are decided on the logits of each class map. A cell is a peak when no cell of its 3×3
  neighbourhood is larger and no *earlier* neighbour (raster order: the row above, or the cell
  to its left) is equal. A plateau of equal maxima (common after int8 quantization) thus keeps
  its first cell in raster order, which is one box for a compact (e.g. 2×2) plateau.
- Peaks are ranked by logit (hence by score), largest first; equal logits are ordered by
  ascending flat index `(y * W + x) * C + c` (row-major, then class), also at the top-K cut.

Scores are the sigmoid of the peak logits; the two sigmoid implementations can differ in the
last float32 bit, which never changes the selection or the order.
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


# The 8 neighbours of a cell as (dy, dx), and whether each comes earlier in raster order.
_NEIGHBOURS = tuple(
    (dy, dx, dy < 0 or (dy == 0 and dx < 0))
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
)


def peak_mask(heatmap: np.ndarray) -> np.ndarray:
    """Local maxima of a `[H, W, C]` map over each 3×3 window (the max-pool "NMS").

    A location is a peak when no neighbour is larger and no earlier neighbour in raster order
    is equal: of a plateau of equal neighbours (common after int8 quantization) only the first
    cell in raster order is kept, so a compact plateau gives one box. `CenterNetDecoder` uses
    the same rule.
    """
    height, width = heatmap.shape[:2]
    padded = np.pad(heatmap, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    peaks = np.ones(heatmap.shape, bool)
    for dy, dx, earlier in _NEIGHBOURS:
        neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        peaks &= heatmap > neighbour if earlier else heatmap >= neighbour
    return peaks


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest of 1-D `values`, largest first, equal values by index.

    The order `tf.math.top_k` gives, including which of several equal values make the cut.
    """
    if k < values.size:
        kth = np.partition(values, values.size - k)[values.size - k]
        above = np.flatnonzero(values > kth)
        ties = np.flatnonzero(values == kth)[: k - len(above)]
        indices = np.sort(np.concatenate([above, ties]))
    else:
        indices = np.arange(values.size)
    return indices[np.argsort(-values[indices], kind="stable")]


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

    Peaks follow `peak_mask`; they are ranked by logit, equal logits by ascending flat index
    `(y * W + x) * C + c`, exactly as `CenterNetDecoder` ranks them.

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
        peaks = peak_mask(logits).reshape(-1)
        ranked = np.where(peaks, logits.reshape(-1), -np.inf)
        candidates = _top_k(ranked, min(top_k, ranked.size))
        candidates = candidates[peaks[candidates]]
        scores = _sigmoid(ranked[candidates])
        candidates, scores = (
            candidates[scores >= score_threshold],
            scores[scores >= score_threshold],
        )
        cell, classes = np.divmod(candidates, num_classes)
        ys, xs = np.divmod(cell, logits.shape[1])
        # float32 throughout, the arithmetic of `CenterNetDecoder`, so both give the same boxes.
        centre_x = (xs.astype(np.float32) + offsets[ys, xs, 0]) * np.float32(stride)
        centre_y = (ys.astype(np.float32) + offsets[ys, xs, 1]) * np.float32(stride)
        half_w = np.maximum(sizes[ys, xs, 0], 0.0) * np.float32(stride) / np.float32(2)
        half_h = np.maximum(sizes[ys, xs, 1], 0.0) * np.float32(stride) / np.float32(2)
        boxes = np.stack(
            [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1
        ).astype(np.float32)
        results.append(Detections(boxes.reshape(-1, 4), scores.astype(np.float32), classes))
    return results


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CenterNetDecoder(keras.layers.Layer):
    """In-graph decoding: `[heatmap, size, offset]` to padded top-K boxes, scores and classes.

    Returns `boxes` `[b, top_k, 4]` (`x_min, y_min, x_max, y_max`, input pixels), `scores`
    `[b, top_k]` and `classes` `[b, top_k]` (int32). Peaks follow the rule of `peak_mask`: no
    larger 3×3 neighbour and no equal earlier neighbour in raster order, so a plateau keeps its
    first cell. They are ranked by logit, equal logits by ascending flat index
    `(y * W + x) * C + c`, as in `decode_detections`. Entries are not thresholded (filter on
    `scores`); when there are fewer than `top_k` peaks the rest are padding with score 0.
    """

    def __init__(self, stride: int = 4, top_k: int = 100, **kwargs):
        super().__init__(**kwargs)
        if stride < 1 or top_k < 1:
            raise ValueError(f"Expected stride, top_k >= 1. Received: {stride=}, {top_k=}.")
        self.stride = stride
        self.top_k = top_k

    def call(self, inputs):
        heatmap_logits, size, offset = inputs
        shape = tf.shape(heatmap_logits)
        height, width, classes = shape[1], shape[2], shape[3]
        padded = tf.pad(
            heatmap_logits, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-float("inf")
        )
        peaks = tf.ones_like(heatmap_logits, tf.bool)
        for dy, dx, earlier in _NEIGHBOURS:
            neighbour = padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            compare = tf.greater if earlier else tf.greater_equal
            peaks = tf.logical_and(peaks, compare(heatmap_logits, neighbour))
        peaks = tf.reshape(peaks, [shape[0], -1])
        flat = tf.reshape(heatmap_logits, [shape[0], -1])
        ranked = tf.where(peaks, flat, tf.fill(tf.shape(flat), -float("inf")))
        # `top_k` puts the lower index first among equal values: the documented tie order.
        top_logits, indices = tf.math.top_k(ranked, k=tf.minimum(self.top_k, tf.shape(ranked)[1]))
        is_peak = tf.gather(peaks, indices, batch_dims=1)
        top_scores = tf.where(is_peak, tf.sigmoid(top_logits), tf.zeros_like(top_logits))
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
