"""`build_centernet`: backbone, upsampling neck and heads as one flat functional model."""

from __future__ import annotations

from collections.abc import Sequence

import tf_keras as keras

from detection.centernet.centernet_backbone import backbone_features, scaled
from detection.centernet.centernet_heads import centernet_heads, upsampling_neck
from kd_keras.models.applications import STRIDES, application_features, is_application

OUTPUT_STRIDE = 4


def build_centernet(
    input_shape: Sequence[int] = (128, 128, 3),
    num_classes: int = 4,
    backbone: str = "resnet",
    width: float = 1.0,
    depth: int = 1,
    neck_channels: int = 64,
    head_channels: int = 32,
    prior: float = 0.1,
    name: str = "centernet",
    weights: str | None = None,
) -> keras.Model:
    """A CenterNet ("Objects as Points", Zhou et al., 2019) detector with output stride 4.

    Outputs, in order: `heatmap` logits `[b, H/4, W/4, num_classes]`, `size` `[b, H/4, W/4, 2]`
    (box width and height in output-stride units) and `offset` `[b, H/4, W/4, 2]` (sub-pixel centre
    offset). Inputs are RGB images in [0, 1]. The neck output is the layer `neck`.
    Teacher and student are this family at different `width`/`depth`; `neck_channels` and
    `head_channels` are scaled by `width` too.

    Args:
        input_shape: `(height, width, 3)`, height and width multiples of 16.
        num_classes: object classes.
        backbone: `"resnet"` or `"mobilenet"` (kd-keras's own, strides 4 to 16), or a
            `tf_keras.applications` network (`kd_keras.models.applications`: strides 4 to 32;
            height and width multiples of 32; `width` is its alpha, `depth` does not apply).
        width: channel multiplier of the whole network.
        depth: blocks per backbone stage.
        neck_channels: neck width at `width=1`.
        head_channels: hidden width of each head at `width=1`.
        prior: initial heatmap probability.
        name: model name.
        weights: an applications backbone's `"imagenet"`, None or weights file.
    """
    height, image_width = input_shape[0], input_shape[1]
    if height % 16 or image_width % 16:
        raise ValueError(
            "Expected image height and width to be multiples of 16 (the backbone's stride). "
            f"Received: input_shape={tuple(input_shape)}."
        )
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if is_application(backbone):
        taps = application_features(inputs, backbone, width, weights)
        features = [taps[stride] for stride in STRIDES]
    else:
        features = backbone_features(inputs, backbone, width, depth)
    neck = upsampling_neck(features, scaled(neck_channels, width, minimum=8))
    outputs = centernet_heads(neck, num_classes, scaled(head_channels, width, minimum=8), prior)
    return keras.Model(inputs, outputs, name=name)
