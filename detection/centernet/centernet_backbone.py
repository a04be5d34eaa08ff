"""Small CenterNet backbones: ResNet-like and MobileNet-like, sized by a width multiplier.

Both return feature maps at strides 4, 8 and 16 for the upsampling neck. They are written as
functions on tensors (not nested models) so the detector is one flat functional graph that TF-MOT
can prune and quantize layer by layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras

from kd_keras.models.layers import batch_norm, conv_bn

BACKBONES = ("resnet", "mobilenet")
# Channels of the stem and of the stride-4, 8 and 16 stages at width 1.
BASE_CHANNELS = (16, 32, 64, 128)


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """`channels · width`, rounded, at least `minimum`."""
    return max(minimum, int(round(channels * width)))


def _basic_block(x, filters, strides, name):
    """ResNet basic block: two 3×3 convs with a (projected when needed) identity shortcut."""
    shortcut = x
    if strides != 1:
        # ResNet-D shortcut: average-pool then a stride-1 1×1 conv, so every input pixel counts.
        shortcut = keras.layers.AveragePooling2D(strides, name=f"{name}_pool")(shortcut)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(shortcut, filters, 1, 1, f"{name}_proj", activation=None)
    y = conv_bn(x, filters, 3, strides, f"{name}_a")
    y = conv_bn(y, filters, 3, 1, f"{name}_b", activation=None)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _inverted_residual(x, filters, strides, expansion, name):
    """MobileNetV2 block: 1×1 expand, 3×3 depthwise, linear 1×1 project, residual if it fits."""
    inputs = x
    y = conv_bn(x, x.shape[-1] * expansion, 1, 1, f"{name}_expand", activation="relu6")
    y = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(y)
    y = batch_norm(f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = conv_bn(y, filters, 1, 1, f"{name}_project", activation=None)
    if strides == 1 and inputs.shape[-1] == filters:
        y = keras.layers.Add(name=f"{name}_add")([inputs, y])
    return y


def backbone_features(
    inputs: tf.Tensor, kind: str = "resnet", width: float = 1.0, depth: int = 1
) -> list[tf.Tensor]:
    """Feature maps at strides 4, 8 and 16 of `inputs`.

    Args:
        inputs: image tensor `[batch, height, width, 3]`, height and width multiples of 16.
        kind: `"resnet"` (basic residual blocks) or `"mobilenet"` (inverted residuals, ReLU6).
        width: channel multiplier (> 0).
        depth: blocks per stage (>= 1).

    Returns:
        `[c4, c8, c16]`, the outputs of layers `stage1_out`, `stage2_out`, `stage3_out`.
    """
    if kind not in BACKBONES:
        raise ValueError(f"Expected kind in {BACKBONES}. Received: kind={kind!r}.")
    if width <= 0:
        raise ValueError(f"Expected width > 0. Received: width={width!r}.")
    if depth < 1:
        raise ValueError(f"Expected depth >= 1. Received: depth={depth!r}.")
    stem, *stages = (scaled(c, width) for c in BASE_CHANNELS)
    activation = "relu" if kind == "resnet" else "relu6"
    x = conv_bn(inputs, stem, 3, 2, "stem", activation=activation)
    features = []
    for index, filters in enumerate(stages):
        for block in range(depth):
            name = f"stage{index + 1}_block{block + 1}"
            strides = 2 if block == 0 else 1
            if kind == "resnet":
                x = _basic_block(x, filters, strides, name)
            else:
                x = _inverted_residual(x, filters, strides, expansion=4, name=name)
        x = keras.layers.Activation("linear", name=f"stage{index + 1}_out")(x)
        features.append(x)
    return features


def build_centernet_backbone(
    input_shape: Sequence[int] = (128, 128, 3),
    kind: str = "resnet",
    width: float = 1.0,
    depth: int = 1,
    name: str = "centernet_backbone",
) -> keras.Model:
    """The backbone alone, as a functional model returning `[c4, c8, c16]`."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    return keras.Model(inputs, backbone_features(inputs, kind, width, depth), name=name)
