"""`CenterNetDecoder`: CenterNet decoding as a Keras layer, for an in-graph decoder (`add_decoder`).

It follows the rule of the numpy decoder `kd_runtime.centernet.decode_detections` (re-exported
here with `Detections` and `peak_mask`), so both return the same peaks in the same order; the
two sigmoid implementations can differ in the last float32 bit, which never changes the
selection or the order.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_runtime.centernet import NEIGHBOURS, Detections, decode_detections, peak_mask

_PACKAGE = "detection"


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
        for dy, dx, earlier in NEIGHBOURS:
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


__all__ = ["CenterNetDecoder", "Detections", "add_decoder", "decode_detections", "peak_mask"]
