"""Re-identification networks: backbone, pooling, BNNeck embedding and an identity classifier.

    image ─► backbone ─► global pool ─► Dense `features` ─► BN `embedding` ─► Dense `logits`
                                          (triplet loss)      (deployed)        (ID loss, training)

The BNNeck (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification",
2019) puts the triplet loss on the features before the batch norm and the identity loss after it;
the normalized `embedding` is what a robot computes and compares. The training model has two
outputs, `[features, logits]`; `embedding_model(model)` is the deployable model (embedding only).

Two backbones, both made of layers TF-MOT can prune and quantize:
- `"resnet"`: ResNet-like stages of basic residual blocks (3×3 conv, BN, ReLU, identity or 1×1
  projection shortcut);
- `"mobilenet"`: MobileNet-like depthwise-separable blocks, lighter for the same width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tf_keras as keras

from kd_keras.models.applications import application_features, is_application
from kd_keras.models.layers import batch_norm, conv_bn

BACKBONES = ("resnet", "mobilenet")
STAGE_FILTERS = (32, 64, 128)
FEATURES, EMBEDDING, LOGITS = "features", "embedding", "logits"


def _residual_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = conv_bn(x, filters, 3, stride, f"{name}_a")
    y = conv_bn(y, filters, 3, 1, f"{name}_b", activation=None)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, stride, f"{name}_proj", activation=None)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _separable_block(x, filters: int, stride: int, name: str):
    x = keras.layers.DepthwiseConv2D(
        3, stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = batch_norm(f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    return conv_bn(x, filters, 1, 1, f"{name}_pw")


def build_backbone(
    inputs,
    backbone: str = "resnet",
    width: float = 1.0,
    blocks_per_stage: int = 1,
    stage_filters: Sequence[int] = STAGE_FILTERS,
):
    """The feature map of a `"resnet"` or `"mobilenet"` backbone on `inputs`.

    A 3×3 stem conv (stride 1), then one stage per entry of `stage_filters` (channels scaled by
    `width`, at least 4); every stage but the first starts with a stride-2 block.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Expected backbone in {BACKBONES}. Received: backbone={backbone!r}.")
    if width <= 0:
        raise ValueError(f"Expected width > 0. Received: width={width!r}.")
    if blocks_per_stage < 1:
        raise ValueError(f"Expected blocks_per_stage >= 1. Received: {blocks_per_stage=}.")
    channels = [max(4, int(round(f * width))) for f in stage_filters]
    x = conv_bn(inputs, channels[0], 3, 1, "stem")
    block = _residual_block if backbone == "resnet" else _separable_block
    for stage, filters in enumerate(channels):
        for index in range(blocks_per_stage):
            stride = 2 if stage > 0 and index == 0 else 1
            x = block(x, filters, stride, f"stage{stage + 1}_block{index + 1}")
    return x


def build_reid_model(
    input_shape: Sequence[int],
    num_identities: int,
    backbone: str = "resnet",
    width: float = 1.0,
    embedding_dim: int = 64,
    blocks_per_stage: int = 1,
    name: str = "reid",
    weights: str | None = None,
) -> keras.Model:
    """A training model with outputs `[features, logits]` (see the module docstring).

    Args:
        input_shape: `(height, width, 3)`.
        num_identities: training identities (classifier outputs).
        backbone: `"resnet"` or `"mobilenet"`, or a `tf_keras.applications` network
            (`kd_keras.models.applications`; its stride-32 output is pooled, `blocks_per_stage`
            does not apply, height and width are multiples of 32).
        width: channel multiplier of the backbone (an applications MobileNet's alpha).
        embedding_dim: size of `features` and `embedding`.
        blocks_per_stage: blocks per backbone stage.
        name: model name.
        weights: an applications backbone's `"imagenet"`, None or weights file.

    Returns:
        A functional model; layers `features`, `embedding` and `logits` are named as above.

    Example:
        >>> model = build_reid_model((64, 32, 3), 751, backbone="mobilenet", embedding_dim=32)
        >>> encoder = embedding_model(model)  # image -> 32-d embedding
    """
    if num_identities < 2:
        raise ValueError(f"Expected num_identities >= 2. Received: {num_identities=}.")
    if embedding_dim < 1:
        raise ValueError(f"Expected embedding_dim >= 1. Received: {embedding_dim=}.")
    # === Functional Model ===
    inputs = keras.Input(tuple(input_shape), name="image")
    if is_application(backbone):
        x = application_features(inputs, backbone, width, weights)[32]
    else:
        x = build_backbone(inputs, backbone, width, blocks_per_stage)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    features = keras.layers.Dense(embedding_dim, name=FEATURES)(x)
    embedding = batch_norm(EMBEDDING)(features)
    logits = keras.layers.Dense(num_identities, use_bias=False, name=LOGITS)(embedding)
    return keras.Model(inputs, [features, logits], name=name)


def embedding_model(model: keras.Model, name: str | None = None) -> keras.Model:
    """The deployable encoder: `model`'s input to its `embedding` layer, sharing weights.

    Works on a training model from `build_reid_model` and on one wrapped by TF-MOT (whose
    layers keep their names inside `prune_low_magnitude` / `quant_` wrappers).
    """
    layer = _find_layer(model, EMBEDDING)
    return keras.Model(model.inputs, layer.output, name=name or f"{model.name}_embedding")


def fold_bnneck(model: keras.Model, name: str | None = None) -> keras.Model:
    """The inference form of a training model: `features` and the BNNeck folded into one Dense.

    In inference mode the batch norm is affine, so with `s = γ / √(σ² + ε)`:

        embedding = (W·p + b − μ)·s + β = (W·s)·p + ((b − μ)·s + β)

    The returned model has outputs `[embedding, logits]` (layers named `embedding` and `logits`,
    the classifier weights shared with `model`). Every layer is one TF-MOT prunes and quantizes
    fully to int8, so this is the model to compress and export; its `embedding_model` gives the
    same embeddings as `embedding_model(model)`.
    """
    pool = model.get_layer("pool").output
    dense = model.get_layer(FEATURES)
    norm = model.get_layer(EMBEDDING)
    scale = norm.gamma.numpy() / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
    kernel = dense.kernel.numpy() * scale
    bias = (dense.bias.numpy() - norm.moving_mean.numpy()) * scale + norm.beta.numpy()
    folded = keras.layers.Dense(kernel.shape[-1], name=EMBEDDING)
    embedding = folded(pool)
    folded.set_weights([kernel, bias])
    logits = model.get_layer(LOGITS)(embedding)
    return keras.Model(model.inputs, [embedding, logits], name=name or f"{model.name}_folded")


def _find_layer(model: keras.Model, layer_name: str) -> keras.layers.Layer:
    for candidate in (layer_name, f"prune_low_magnitude_{layer_name}", f"quant_{layer_name}"):
        try:
            return model.get_layer(candidate)
        except ValueError:
            continue
    raise ValueError(
        f"Model {model.name!r} has no {layer_name!r} layer; expected a model built by "
        f"reid.models.build_reid_model. Its layers are: {[lay.name for lay in model.layers]}. "
        f"Received: model={model.name!r}."
    )
