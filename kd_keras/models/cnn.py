"""Small functional CNN classifiers for teachers and students, sized by width and depth."""

from __future__ import annotations

from collections.abc import Sequence

import tf_keras as keras

from kd_keras.models.layers import batch_norm
from kd_keras.models.lma import LMA

BASE_FILTERS = (32, 64, 128)
ACTIVATIONS = ("relu", "lma")


def build_cnn_classifier(
    input_shape: Sequence[int],
    num_classes: int,
    width_multiplier: float = 1.0,
    depth_multiplier: int = 1,
    base_filters: Sequence[int] = BASE_FILTERS,
    dropout: float = 0.0,
    name: str = "cnn",
    activation: str = "relu",
) -> keras.Model:
    """A VGG-like functional classifier that outputs logits.

    Each stage has `depth_multiplier` blocks of 3×3 conv + BatchNorm (momentum 0.9, so short
    runs on small datasets end with usable statistics) + ReLU (or LMA) with
    `round(filters · width_multiplier)` channels, then a 2×2 max-pool (skipped when the map is
    already 1 pixel wide). A global average pool gives the `features` layer (a hint point for
    `FeatureDistillation`); a dense layer named `logits` gives the class scores (no softmax).
    Every layer is supported by TF-MOT pruning and 8-bit quantization.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of output logits.
        width_multiplier: scales every stage's channel count (> 0).
        depth_multiplier: conv blocks per stage (>= 1).
        base_filters: channels of each stage at width 1.
        dropout: dropout rate before the logits.
        name: model name.
        activation: the blocks' activation: `"relu"` (layers `<block>_relu`) or `"lma"`, a
            learnable 4-piece `LMA` that starts as ReLU (layers `<block>_lma`).

    Returns:
        A functional `keras.Model`.
    """
    if width_multiplier <= 0:
        raise ValueError(f"Expected width_multiplier > 0. Received: {width_multiplier=}.")
    if depth_multiplier < 1:
        raise ValueError(f"Expected depth_multiplier >= 1. Received: {depth_multiplier=}.")
    if num_classes < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: {num_classes=}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Expected activation in {ACTIVATIONS}. Received: {activation=}.")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    size = min(input_shape[0], input_shape[1])
    for stage, filters in enumerate(base_filters):
        channels = max(4, int(round(filters * width_multiplier)))
        for block in range(depth_multiplier):
            prefix = f"stage{stage + 1}_block{block + 1}"
            x = keras.layers.Conv2D(
                channels, 3, padding="same", use_bias=False, name=f"{prefix}_conv"
            )(x)
            x = batch_norm(f"{prefix}_bn")(x)
            if activation == "lma":
                x = LMA(name=f"{prefix}_lma")(x)
            else:
                x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
        if size >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"stage{stage + 1}_pool")(x)
            size //= 2
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def stage_outputs(model: keras.Model) -> list[str]:
    """Names of the layers ending each stage of a `build_cnn_classifier` model, in order."""
    ends: dict[str, str] = {}
    for layer in model.layers:
        stage = layer.name.split("_", 1)[0]
        if stage.startswith("stage"):
            ends[stage] = layer.name
    return list(ends.values())
