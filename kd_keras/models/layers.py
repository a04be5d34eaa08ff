"""Building blocks shared by the task networks."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

ACTIVATIONS = ("relu", "relu6", None)


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """A BatchNormalization layer (momentum 0.9) whose training statistics span the global batch.

    Built under a strategy with several replicas (`--strategy mirrored` or `multiworker`), it is
    `synchronized`: each step's mean and variance are all-reduced over every replica, so a
    replica normalises its share of the batch as one process normalises the whole batch. Built
    anywhere else, it is the plain layer.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return keras.layers.BatchNormalization(momentum=0.9, name=name, synchronized=replicas > 1)


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
    x = batch_norm(f"{name}_bn")(x)
    if activation is None:
        return x
    return keras.layers.ReLU(6.0 if activation == "relu6" else None, name=f"{name}_relu")(x)


__all__ = ["batch_norm", "conv_bn"]
