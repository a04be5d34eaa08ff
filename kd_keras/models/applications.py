"""Standard backbones robot teams deploy, from `tf_keras.applications`, as flat feature taps.

    features = application_features(inputs, "mobilenet_v2", width=0.35, weights=None)
    c4, c8, c16, c32 = (features[s] for s in (4, 8, 16, 32))

Students: `mobilenet_v2` (width = alpha, 0.35 to 1.4) and `mobilenet_v3_small` (alpha);
teachers: `resnet50` and `efficientnet_b0` (width 1 only). `weights` is `"imagenet"` (downloaded
by Keras on first use, into `~/.keras/models`), `None` (random) or the path of a weights file of
the same headless network, e.g. the one Keras downloaded, copied to a robot-side machine.

Inputs are RGB in [0, 1], as every kd-keras task feeds them. An `InputAffine` layer maps them to
what the network's weights expect (MobileNets: [-1, 1]; ResNet50: Caffe-style 0..255 minus the
ImageNet mean; EfficientNet: 0..255, normalised inside), so ImageNet weights see their own input
range. The network's layers are built directly on that tensor (`input_tensor`), so a model made
from the taps is one flat functional graph that TF-MOT can prune and quantize layer by layer.

TF-MOT's QAT wraps every application but `mobilenet_v3_small`: tf_keras builds its hard-swish
from `TFOpLambda` layers (`x + 3`, `· 1/6`), which TF-MOT's quantize wrapper cannot call. That
student takes post-training int8 quantization instead (`kd_keras.compress.qat_refusal`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_keras.models.layers import InputAffine

_apps = keras.applications
# The Caffe preprocessing of ResNet50's weights: BGR minus this mean, in RGB order here.
_IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclass(frozen=True)
class Application:
    """One `tf_keras.applications` network: its constructor, widths, input range and taps."""

    build: Callable[..., keras.Model]
    #: alphas Keras ships ImageNet weights for; None: the network has no width parameter.
    imagenet_widths: tuple[float, ...] | None
    #: per-channel `scale` and `offset` from [0, 1] RGB to the weights' input.
    input_scale: tuple[float, float, float]
    input_offset: tuple[float, float, float]
    #: output stride -> the layer whose output is the feature map at that stride (stride 32 is
    #: the headless network's own output).
    taps: dict[int, str]
    #: the first conv was trained on BGR input (its kernel's channels are reversed for RGB).
    bgr_conv: str | None = None
    extra: tuple[tuple[str, object], ...] = ()


APPLICATIONS: dict[str, Application] = {
    "mobilenet_v2": Application(
        _apps.MobileNetV2,
        (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        (2.0, 2.0, 2.0),
        (-1.0, -1.0, -1.0),
        {4: "block_2_add", 8: "block_5_add", 16: "block_12_add"},
    ),
    "mobilenet_v3_small": Application(
        _apps.MobileNetV3Small,
        (0.75, 1.0),
        (2.0, 2.0, 2.0),
        (-1.0, -1.0, -1.0),
        {
            4: "expanded_conv/project/BatchNorm",
            8: "expanded_conv_2/Add",
            16: "expanded_conv_7/Add",
        },
        extra=(("include_preprocessing", False),),
    ),
    "resnet50": Application(
        _apps.ResNet50,
        None,
        (255.0, 255.0, 255.0),
        tuple(-m for m in _IMAGENET_MEAN_RGB),
        {4: "conv2_block3_out", 8: "conv3_block4_out", 16: "conv4_block6_out"},
        bgr_conv="conv1_conv",
    ),
    "efficientnet_b0": Application(
        _apps.EfficientNetB0,
        None,
        (255.0, 255.0, 255.0),
        (0.0, 0.0, 0.0),
        {4: "block2b_add", 8: "block3b_add", 16: "block5c_add"},
    ),
}
STRIDES = (4, 8, 16, 32)


def is_application(backbone: str) -> bool:
    """Whether `backbone` names a `tf_keras.applications` network (see `APPLICATIONS`)."""
    return backbone in APPLICATIONS


def check_application(backbone: str, width: float, weights: str | None, key: str) -> None:
    """Raises `ValueError` for settings `application_features` would refuse, before building.

    Args:
        backbone: a name in `APPLICATIONS`.
        width: the network's alpha (1 for networks without one).
        weights: `"imagenet"`, None or a weights file path.
        key: the config section named in the message, e.g. `"student_model"`.
    """
    if backbone not in APPLICATIONS:
        raise ValueError(
            f"Expected {key}.backbone in {tuple(APPLICATIONS)}. Received: {backbone!r}."
        )
    application = APPLICATIONS[backbone]
    if application.imagenet_widths is None and width != 1:
        raise ValueError(
            f"{backbone} has no width multiplier: set {key}.width to 1. Received: width={width}."
        )
    if weights == "imagenet":
        widths = application.imagenet_widths
        if widths is not None and width not in widths:
            raise ValueError(
                f"Keras ships ImageNet weights of {backbone} at widths {widths}: set "
                f"{key}.width to one of them, or {key}.weights to null or a weights file. "
                f"Received: width={width}."
            )
    elif weights is not None and not Path(weights).is_file():
        raise ValueError(
            f"{key}.weights is 'imagenet', null or the path of a weights file of the headless "
            f"{backbone}; no file is at {weights!r}."
        )


def application_features(
    inputs: tf.Tensor, backbone: str, width: float = 1.0, weights: str | None = None
) -> dict[int, tf.Tensor]:
    """Feature maps at strides 4, 8, 16 and 32 of a standard backbone on `inputs`.

    Args:
        inputs: a `keras.Input` of RGB images in [0, 1], height and width multiples of 32 (at
            least 32).
        backbone: a name in `APPLICATIONS`.
        width: the MobileNets' alpha; 1 for ResNet50 and EfficientNetB0.
        weights: `"imagenet"`, None (random) or the path of a weights file of the headless
            network at this width.

    Returns:
        `{4: c4, 8: c8, 16: c16, 32: c32}`: the layers in `APPLICATIONS[...].taps`, and the
        headless network's output at stride 32.

    Raises:
        ValueError: an unknown backbone, a width it has no weights for, a missing or mismatched
            weights file, or an input smaller than 32 pixels or not a multiple of 32.
    """
    check_application(backbone, width, weights, "backbone")
    height, image_width = inputs.shape[1], inputs.shape[2]
    if height is None or image_width is None or height % 32 or image_width % 32 or height < 32:
        raise ValueError(
            f"{backbone} needs an input whose height and width are multiples of 32 (its "
            f"stride), at least 32. Received: {height}x{image_width}."
        )
    application = APPLICATIONS[backbone]
    x = InputAffine(application.input_scale, application.input_offset, name="input_affine")(inputs)
    kwargs = dict(application.extra)
    if application.imagenet_widths is not None:
        kwargs["alpha"] = width
    try:
        network = application.build(input_tensor=x, include_top=False, weights=weights, **kwargs)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"Could not load {backbone} weights {weights!r} at width {width}: {error}. A weights "
            "file must hold the headless network (include_top=False) at the same width."
        ) from None
    if application.bgr_conv and weights is not None:
        _reverse_input_channels(network.get_layer(application.bgr_conv))
    features = {stride: network.get_layer(name).output for stride, name in application.taps.items()}
    return {**features, 32: network.output}


def _reverse_input_channels(conv: keras.layers.Conv2D) -> None:
    """Makes a conv trained on BGR images take RGB: `conv(W, bgr) = conv(W[:, :, ::-1], rgb)`."""
    kernel, *rest = conv.get_weights()
    conv.set_weights([np.ascontiguousarray(kernel[:, :, ::-1, :]), *rest])
