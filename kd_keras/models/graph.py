"""The layer graph of a functional tf_keras model: every private tf_keras attribute kd-keras reads.

tf_keras keeps a functional model's graph in private attributes (`_is_graph_network`,
`_inbound_nodes`, `_outbound_nodes`, `_network_nodes`, a tensor's `_keras_history`). They are read
here and nowhere else, so an upgrade that renames one breaks one module, and
`tests/kd_keras/test_graph.py` says which attribute went.
"""

from __future__ import annotations

import tf_keras as keras


def is_functional(model) -> bool:
    """Whether `model` is a functional or Sequential tf_keras model (not subclassed)."""
    return isinstance(model, keras.Model) and bool(getattr(model, "_is_graph_network", False))


def check_functional(model, role: str) -> None:
    """Raises `TypeError` naming `role` unless `model` is a functional/Sequential tf_keras model.

    TF-MOT and the distillation terms read and rewrite the layer graph, which a Keras 3 model
    or a subclassed model does not expose.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected the {role} to be a tf_keras model (import tf_keras as keras); TF-MOT "
            f"cannot prune or quantize Keras 3 objects. Received: {role}={type(model)!r}."
        )
    if not is_functional(model):
        raise TypeError(
            f"Expected the {role} to be a functional or Sequential tf_keras model, whose layer "
            "graph can be read, pruned and quantized. Rebuild it with "
            f"keras.Model(inputs, outputs). Received: {role}={type(model).__name__} (subclassed)."
        )


def describe_layers(layers) -> str:
    """`'conv1' (Conv2D), 'add' (TFOpLambda)`: names and classes, for error messages."""
    return ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in layers)


def inbound_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers feeding `layer`'s first call."""
    if not layer._inbound_nodes:
        return []
    inbound = layer._inbound_nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, list | tuple) else [inbound]


def consumers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers that read `layer`'s output."""
    return [node.outbound_layer for node in layer._outbound_nodes]


def calls_in(model: keras.Model, layer: keras.layers.Layer) -> list:
    """The nodes (calls) of `layer` that belong to `model`'s graph (a shared layer has several)."""
    return [
        node
        for index, node in enumerate(layer._inbound_nodes)
        if f"{layer.name}_ib-{index}" in model._network_nodes
    ]


def source_layer(tensor) -> keras.layers.Layer:
    """The layer that produced a symbolic tensor of a functional model."""
    return tensor._keras_history.layer


def output_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The layer producing a single-output model's output (`None` with several outputs)."""
    return model.outputs[0].node.layer if len(model.outputs) == 1 else None


__all__ = [
    "calls_in",
    "check_functional",
    "consumers",
    "describe_layers",
    "inbound_layers",
    "is_functional",
    "output_layer",
    "source_layer",
]
