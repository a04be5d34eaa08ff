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


def assert_litert_agrees(
    model,
    tflite,
    x: np.ndarray,
    top1: float | None = None,
    max_abs: float | None = None,
    correlation: float | None = None,
    cosine: float | None = None,
) -> dict:
    """Runs `tflite` (a path or flatbuffer) in LiteRT and `model` in Keras on `x` and asserts
    the given agreements: top-1 agreement at least `top1`, largest absolute difference at most
    `max_abs`, correlation of all outputs above `correlation`, mean cosine of the output rows
    above `cosine`. Returns the measured figures."""
    from kd_keras.export import tflite_predict

    expected = np.asarray(model.predict(x, verbose=0))
    actual = tflite_predict(tflite, x)
    rows_expected, rows_actual = expected.reshape(len(x), -1), actual.reshape(len(x), -1)
    norms = np.linalg.norm(rows_expected, axis=1) * np.linalg.norm(rows_actual, axis=1)
    measured = {
        "top1": float(np.mean(expected.argmax(-1) == actual.argmax(-1))),
        "max_abs": float(np.abs(expected - actual).max()),
        "correlation": float(np.corrcoef(expected.ravel(), actual.ravel())[0, 1]),
        "cosine": float(np.mean(np.sum(rows_expected * rows_actual, 1) / (norms + 1e-12))),
    }
    if top1 is not None:
        assert measured["top1"] >= top1, measured
    if max_abs is not None:
        assert measured["max_abs"] <= max_abs, measured
    if correlation is not None:
        assert measured["correlation"] > correlation, measured
    if cosine is not None:
        assert measured["cosine"] > cosine, measured
    return measured
