"""Decoding CenterNet outputs into boxes in numpy: 3×3 local-maximum peaks, top-K, input pixels.

The one decoder of kd-keras: the training side (`detection.evaluation`, COCOeval) and the robot
side (`kd_runtime.Detector`) both call `decode_detections`, and the in-graph
`detection.centernet.CenterNetDecoder` follows the same rule:

- Peaks are decided on the logits of each class map. A cell is a peak when no cell of its 3×3
  neighbourhood is larger and no *earlier* neighbour (raster order: the row above, or the cell
  to its left) is equal. A plateau of equal maxima (common after int8 quantization) thus keeps
  its first cell in raster order, which is one box for a compact (e.g. 2×2) plateau.
- Peaks are ranked by logit (hence by score), largest first; equal logits are ordered by
  ascending flat index `(y * W + x) * C + c` (row-major, then class), also at the top-K cut.

Scores are the sigmoid of the peak logits.
"""

from __future__ import annotations

import dataclasses

import numpy as np


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
NEIGHBOURS = tuple(
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
    for dy, dx, earlier in NEIGHBOURS:
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
