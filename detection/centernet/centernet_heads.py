"""The CenterNet neck (upsampling to stride 4) and its three heads (heatmap, size, offset)."""

from __future__ import annotations

import math

import tf_keras as keras

from kd_keras.models.layers import batch_norm

HEAD_NAMES = ("heatmap", "size", "offset")


def heatmap_prior_bias(prior: float = 0.1) -> float:
    """Bias making the initial sigmoid equal `prior`: `−log((1 − prior) / prior)`.

    Starting the heatmap at a low probability keeps the focal loss of the many background pixels
    from swamping the first steps (Lin et al., "Focal Loss for Dense Object Detection", 2017).
    """
    if not 0 < prior < 1:
        raise ValueError(f"Expected prior in (0, 1). Received: prior={prior!r}.")
    return -math.log((1 - prior) / prior)


def upsampling_neck(features, channels: int):
    """Top-down neck: 1×1 laterals, nearest-neighbour ×2 upsampling and sums, to stride 4.

    `features` run from stride 4 up, each twice the stride of the one before (`[c4, c8, c16]`
    from kd-keras's backbones, `[c4, c8, c16, c32]` from a `tf_keras.applications` one).

    `UpSampling2D(interpolation="nearest")`, `Add` and convolutions all have TF-MOT 8-bit
    quantization support and full-int8 TFLite kernels, so the student survives QAT and export.
    The output is the `neck` layer, the hint point for feature distillation.
    """
    strides = [4 * 2**index for index in range(len(features))]
    x = keras.layers.Conv2D(channels, 1, name=f"lateral{strides[-1]}")(features[-1])
    for stride, lateral in reversed(list(zip(strides[:-1], features[:-1], strict=True))):
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up{stride}")(x)
        skip = keras.layers.Conv2D(channels, 1, name=f"lateral{stride}")(lateral)
        x = keras.layers.Add(name=f"merge{stride}")([x, skip])
        x = keras.layers.Conv2D(
            channels, 3, padding="same", use_bias=False, name=f"smooth{stride}_conv"
        )(x)
        x = batch_norm(f"smooth{stride}_bn")(x)
        x = keras.layers.ReLU(name=f"smooth{stride}_relu")(x)
    return keras.layers.Activation("linear", name="neck")(x)


def centernet_heads(neck, num_classes: int, head_channels: int, prior: float = 0.1):
    """Heatmap logits `[b, h, w, classes]`, box size and centre offset (`[b, h, w, 2]` each).

    Each head is a 3×3 conv + ReLU then a 1×1 conv. The heatmap outputs logits (its sigmoid is taken
    in the loss and the decoder, so distillation can soften the logits); its bias starts at the
    prior `heatmap_prior_bias(prior)`.
    """
    if num_classes < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes!r}.")
    outputs = []
    for name, channels in zip(HEAD_NAMES, (num_classes, 2, 2)):
        x = keras.layers.Conv2D(
            head_channels, 3, padding="same", activation="relu", name=f"{name}_hidden"
        )(neck)
        bias = (
            keras.initializers.Constant(heatmap_prior_bias(prior)) if name == "heatmap" else "zeros"
        )
        outputs.append(keras.layers.Conv2D(channels, 1, bias_initializer=bias, name=name)(x))
    return outputs
