"""Read what a layer's output holds, without running it."""

from __future__ import annotations

import tf_keras as keras


def final_activation(layer: keras.layers.Layer) -> str | None:
    """Name of the activation a layer applies last (`"softmax"`, `"linear"`, ...), or `None`.

    Dense and convolution layers report their `activation`; `Softmax` and `Activation` layers report
    what they apply. Any other layer (e.g. a custom one) returns `None`: nothing can be concluded.
    """
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", None) or str(activation)
    return name.rsplit(".", 1)[-1]
