"""Shared test helpers: tiny models and a serialization round-trip check."""

from __future__ import annotations

import numpy as np
import tf_keras as keras


def tiny_classifier(
    num_classes: int = 3, width: int = 4, input_shape=(6, 6, 1), name: str = "tiny", softmax=False
) -> keras.Model:
    """Conv → ReLU → global pool (`features`) → Dense (`logits`)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    activation = "softmax" if softmax else None
    outputs = keras.layers.Dense(num_classes, activation=activation, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_data(n: int = 8, num_classes: int = 3, input_shape=(6, 6, 1), seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    y = rng.integers(0, num_classes, size=n).astype(np.int64)
    return x, y


def assert_config_round_trip(obj) -> None:
    """`from_config(get_config())` rebuilds an object with the same config, via the registry too."""
    config = obj.get_config()
    rebuilt = type(obj).from_config(config)
    assert rebuilt.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(obj)
    assert again.get_config() == config
