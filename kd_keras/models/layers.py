"""Building blocks shared by the task networks."""

from __future__ import annotations

import tf_keras as keras

ACTIVATIONS = ("relu", "relu6", None)


def conv_bn(x, filters: int, kernel: int, strides: int, name: str, activation: str | None = "relu"):
    """`<name>_conv` (no bias, same padding) → `<name>_bn` (momentum 0.9) → `<name>_relu`.

    `activation` is `"relu"`, `"relu6"` or `None` (no activation layer). BatchNorm momentum 0.9
    gives usable statistics after the short schedules kd-keras trains with.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Expected activation in {ACTIVATIONS}. Received: {activation!r}.")
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    if activation is None:
        return x
    return keras.layers.ReLU(6.0 if activation == "relu6" else None, name=f"{name}_relu")(x)


__all__ = ["conv_bn"]
