"""Tiny learnable data and conv+BN models shared by the compression and export tests."""

from __future__ import annotations

import numpy as np
import tf_keras as keras

SHAPE = (8, 8, 1)
CLASSES = 4


def blob_data(n: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class k has a bright 4×4 blob in quadrant k, on noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n).astype(np.int64)
    x = rng.normal(0.0, 0.3, size=(n, *SHAPE)).astype(np.float32)
    for index, label in enumerate(y):
        row, col = divmod(int(label), 2)
        x[index, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4, 0] += 1.0
    return x, y


def conv_bn_model(width: int = 8, name: str = "net", seed: int = 0) -> keras.Model:
    """Conv → BN → ReLU → Conv → BN → ReLU → pool (`features`) → Dense (`logits`)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    outputs = keras.layers.Dense(CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def trained_model(width: int = 8, epochs: int = 8, name: str = "net", seed: int = 0):
    """A `conv_bn_model` fitted on `blob_data`; returns `(model, x, y)`."""
    x, y = blob_data(seed=seed)
    model = conv_bn_model(width, name, seed)
    model.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return model, x, y


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
