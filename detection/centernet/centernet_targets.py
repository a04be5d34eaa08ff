"""CenterNet training targets: Gaussian centre heatmaps, box sizes and sub-pixel offsets.

All in numpy, computed per image in the input pipeline. Boxes are `[x_min, y_min, x_max, y_max]` in
input-image pixels; targets live on the output grid (`input / stride`).
"""

from __future__ import annotations

import math

import numpy as np

TARGET_KEYS = ("heatmap", "size", "offset")


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """Largest corner shift `r` that keeps IoU ≥ `min_overlap` with the true box (CenterNet's rule).

    Formula (box `h × w`, overlap `o`; each case solved for `r`, the smallest answer is kept):
        both corners shifted the same way: (h − r)(w − r) / (2hw − (h − r)(w − r)) = o
        box shrunk by r on every side:     (h − 2r)(w − 2r) / (hw) = o
        box grown by r on every side:      hw / ((h + 2r)(w + 2r)) = o

    The heatmap Gaussian around each centre has this radius: predicted centres within it still
    decode to a box overlapping the truth by `min_overlap` (Law and Deng, "CornerNet", 2018; Zhou
    et al., "Objects as Points", 2019).
    """
    h, w, o = float(height), float(width), float(min_overlap)
    s = h + w
    r1 = (s - math.sqrt(max(0.0, s * s - 4 * h * w * (1 - o) / (1 + o)))) / 2
    r2 = (2 * s - math.sqrt(max(0.0, 4 * s * s - 16 * (1 - o) * h * w))) / 8
    r3 = (-2 * o * s + math.sqrt(max(0.0, 4 * o * o * s * s + 16 * o * (1 - o) * h * w))) / (8 * o)
    return max(0.0, min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, center_x: int, center_y: int, radius: int) -> None:
    """Writes `max(heatmap, exp(−d² / 2σ²))` in place, σ = (2·radius + 1) / 6, 1 at the centre."""
    sigma = (2 * radius + 1) / 6.0
    height, width = heatmap.shape
    top, bottom = max(0, center_y - radius), min(height, center_y + radius + 1)
    left, right = max(0, center_x - radius), min(width, center_x + radius + 1)
    ys = np.arange(top, bottom, dtype=np.float32)[:, None] - center_y
    xs = np.arange(left, right, dtype=np.float32)[None, :] - center_x
    gaussian = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    np.maximum(heatmap[top:bottom, left:right], gaussian, out=heatmap[top:bottom, left:right])


def encode_targets(
    boxes: np.ndarray,
    classes: np.ndarray,
    input_size: tuple[int, int],
    num_classes: int,
    stride: int = 4,
    min_overlap: float = 0.7,
) -> dict[str, np.ndarray]:
    """Targets for one image.

    Args:
        boxes: `[n, 4]` boxes `x_min, y_min, x_max, y_max` in input pixels.
        classes: `[n]` class indices in `[0, num_classes)`.
        input_size: `(height, width)` of the network input.
        num_classes: number of heatmap channels.
        stride: output stride.
        min_overlap: IoU kept by the Gaussian radius rule.

    Returns:
        `heatmap` `[H, W, num_classes]` (1 at each integer centre, Gaussian around it), `size`
        `[H, W, 3]` (box width, height in output units, then a 0/1 mask of centres) and `offset`
        `[H, W, 3]` (centre minus its integer cell, then the same mask); `H, W = input / stride`.
    """
    out_h, out_w = input_size[0] // stride, input_size[1] // stride
    heatmap = np.zeros((num_classes, out_h, out_w), np.float32)
    size = np.zeros((out_h, out_w, 3), np.float32)
    offset = np.zeros((out_h, out_w, 3), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / stride
    for (x0, y0, x1, y1), label in zip(boxes, np.asarray(classes, np.int64).reshape(-1)):
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), out_w - 1), min(int(cy), out_h - 1)
        if ix < 0 or iy < 0:
            continue
        radius = int(gaussian_radius(math.ceil(h), math.ceil(w), min_overlap))
        draw_gaussian(heatmap[label], ix, iy, radius)
        size[iy, ix] = (w, h, 1.0)
        offset[iy, ix] = (cx - ix, cy - iy, 1.0)
    return {"heatmap": heatmap.transpose(1, 2, 0).copy(), "size": size, "offset": offset}


def as_target_dict(targets) -> dict:
    """Targets as `{"heatmap", "size", "offset"}` from that dict or a `(heatmap, size, offset)`
    sequence (the order of the model's outputs, which is how the input pipeline yields them)."""
    if isinstance(targets, dict):
        if all(key in targets for key in TARGET_KEYS):
            return targets
    elif isinstance(targets, list | tuple) and len(targets) == len(TARGET_KEYS):
        return dict(zip(TARGET_KEYS, targets))
    raise ValueError(
        "Expected CenterNet targets: the dict of detection.centernet.encode_targets "
        "({'heatmap', 'size', 'offset'}) or the tuple (heatmap, size, offset). "
        f"Received: targets={targets!r}."
    )
