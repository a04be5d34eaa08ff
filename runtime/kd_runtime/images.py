"""Frames to model inputs in numpy: resize, colour, normalisation, as `bundle.json` describes.

- `resize`: area averaging when shrinking (each output pixel is the mean of the input pixels it
  covers, as `cv2.INTER_AREA` computes it), bilinear with half-pixel centres when enlarging;
  rounded back to uint8. Separable: each axis is a weighted sum of the few source lines an output
  line covers (the taps are computed once per frame size and kept).
- `to_gray`: ITU-R 601-2 luma, `L = 0.299 R + 0.587 G + 0.114 B` (Pillow's `convert("L")`).
- `model_input`: the resized uint8 frame, then `x = (pixel − mean) / std` in float32 for a float
  or int8 input (the arithmetic of training, e.g. `pixel / 255`). A model whose uint8 input
  quantization is the normalisation itself (`scale = 1 / std`, `zero_point = mean`) takes the
  uint8 pixels as they are: no float arithmetic on the robot.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np


def _weights(source: int, target: int) -> np.ndarray:
    """`[target, source]` interpolation weights along one axis (rows sum to 1)."""
    weights = np.zeros((target, source), np.float64)
    if source >= target:
        scale = source / target
        for i in range(target):
            start, stop = i * scale, (i + 1) * scale
            for j in range(int(np.floor(start)), min(source, int(np.ceil(stop)))):
                weights[i, j] = min(stop, j + 1) - max(start, j)
            weights[i] /= weights[i].sum()
        return weights
    centres = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, source - 1)
    fraction = centres - low
    weights[np.arange(target), low] += 1 - fraction
    weights[np.arange(target), high] += fraction
    return weights


@functools.lru_cache(maxsize=32)
def _taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """`(indices, weights)`, each `[target, taps]`: the source lines behind each output line
    and their weights (`_weights` without its zeros; padded with weight 0)."""
    weights = _weights(source, target)
    nonzero = weights > 0
    taps = int(nonzero.sum(axis=1).max())
    order = np.argsort(~nonzero, axis=1, kind="stable")[:, :taps]
    rows = np.arange(target)[:, None]
    return order, np.where(nonzero[rows, order], weights[rows, order], 0.0)


def _resize_axis(values: np.ndarray, axis: int, target: int) -> np.ndarray:
    """`values` resized along `axis` (0 or 1) to `target` lines, in float32."""
    indices, weights = _taps(values.shape[axis], target)
    shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
    resized = np.zeros(
        (target, *values.shape[1:]) if axis == 0 else (values.shape[0], target, values.shape[2]),
        np.float32,
    )
    for tap in range(indices.shape[1]):
        weight = weights[:, tap].astype(np.float32).reshape(shape)
        resized += weight * np.take(values, indices[:, tap], axis=axis)
    return resized


def resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """`frame` `[h, w, c]` uint8 resized to `[height, width, c]` uint8 (see the module docs)."""
    frame = np.asarray(frame)
    if frame.shape[:2] == (height, width):
        return frame
    resized = _resize_axis(frame, 0, height)
    resized = _resize_axis(resized, 1, width)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def to_gray(frame: np.ndarray) -> np.ndarray:
    """An RGB frame `[h, w, 3]` as luma `[h, w, 1]` uint8."""
    luma = frame[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def as_frame(frame: np.ndarray) -> np.ndarray:
    """Checks a camera frame: uint8 `[h, w, 3]` (RGB) or `[h, w]` / `[h, w, 1]` (gray)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(
            f"Expected a uint8 frame (pixels 0..255). Received: dtype={frame.dtype.name}."
        )
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4) or min(frame.shape[:2]) < 1:
        raise ValueError(
            f"Expected a frame [height, width, 3] (RGB) or [height, width] (gray). "
            f"Received: shape={frame.shape}."
        )
    return frame[..., :3]


def prepared_pixels(frame: np.ndarray, spec: Mapping) -> np.ndarray:
    """The frame resized to the model input and in its colour, uint8 `[h, w, channels]`."""
    frame = as_frame(frame)
    channels = int(spec["channels"])
    if channels == 1 and frame.shape[-1] == 3:
        frame = to_gray(frame)
    elif channels == 3 and frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    return resize(frame, int(spec["height"]), int(spec["width"]))


def takes_pixels(spec: Mapping) -> bool:
    """Whether the model's input takes uint8 pixels as they are (camera-native input)."""
    quantization = spec.get("quantization")
    if spec["dtype"] != "uint8" or quantization is None:
        return False
    mean, std = spec["normalization"]["mean"], spec["normalization"]["std"]
    return bool(
        np.isclose(quantization["scale"] * std, 1.0, rtol=1e-6)
        and quantization["zero_point"] == mean
    )


def model_input(pixels: np.ndarray, spec: Mapping) -> np.ndarray:
    """Prepared pixels `[n, h, w, c]` uint8 as the model's input values."""
    if takes_pixels(spec):
        return np.asarray(pixels, np.uint8)
    normalization = spec["normalization"]
    mean, std = np.float32(normalization["mean"]), np.float32(normalization["std"])
    return (np.asarray(pixels, np.float32) - mean) / std


__all__ = ["as_frame", "model_input", "prepared_pixels", "resize", "takes_pixels", "to_gray"]
