"""Building blocks shared by the task networks."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_model_optimization as tfmot
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


@keras.saving.register_keras_serializable(package="kd_keras")
class InputAffine(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """A fixed per-channel affine map of the input: `y[..., c] = scale[c] · x[..., c] + offset[c]`.

    It turns the [0, 1] images kd-keras feeds into the range a network's weights were trained on
    (e.g. `scale=2, offset=-1` for [-1, 1]). It has no weights: pruning leaves it alone, QAT
    quantizes its output (`kd_keras.compress.OutputQuantizeConfig`), and TFLite folds it into a
    multiply and an add.
    """

    def __init__(self, scale: Sequence[float], offset: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(v) for v in scale]
        self.offset = [float(v) for v in offset]
        if len(self.scale) != len(self.offset):
            raise ValueError(
                f"Expected one scale and one offset per channel. Received: {len(self.scale)} "
                f"scales and {len(self.offset)} offsets."
            )

    def call(self, inputs):
        scale = tf.constant(self.scale, inputs.dtype)
        return inputs * scale + tf.constant(self.offset, inputs.dtype)

    def get_prunable_weights(self):
        return []

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


__all__ = ["InputAffine", "batch_norm", "conv_bn"]
