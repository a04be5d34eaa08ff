"""Parameters, FLOPs and serialized size of any functional model."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import tensorflow as tf
import tf_keras as keras

from kd_keras.compat import convert_variables_to_constants_v2
from kd_keras.models.graph import check_functional


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """Cost of one forward pass on a single example.

    Attributes:
        params: number of weights (trainable and not).
        flops: floating-point operations, counting a multiply-add as 2 (MACs × 2).
        size_bytes: size of the model saved in the native `.keras` format.
    """

    params: int
    flops: int
    size_bytes: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def count_flops(model: keras.Model) -> int:
    """FLOPs of one single-example forward pass, from TensorFlow's graph profiler.

    The model is traced with batch 1 and frozen, and the profiler's `float_operation` counter is
    summed over every op, so any functional model (custom layers included) is covered.
    """
    specs = [tf.TensorSpec([1, *inp.shape[1:]], inp.dtype) for inp in model.inputs]
    function = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(*specs))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    graph_info = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return int(graph_info.total_float_ops)


def serialized_size(model: keras.Model) -> int:
    """Bytes of the model's architecture and weights in the `.keras` format (no optimizer state)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        copy.save(path)
        return os.path.getsize(path)


def profile_model(model: keras.Model) -> ModelProfile:
    """Parameters, FLOPs (MACs × 2) and serialized size of a functional tf_keras model."""
    check_functional(model, "model to profile")
    return ModelProfile(
        params=int(model.count_params()),
        flops=count_flops(model),
        size_bytes=serialized_size(model),
    )
