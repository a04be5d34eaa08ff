"""The private tf_keras attributes kd_keras.models.graph reads: this fails loudly on an upgrade
that renames one, naming it."""

import pytest
import tf_keras as keras

from kd_keras.models import graph


def _model() -> keras.Model:
    inputs = keras.Input((4, 4, 1), name="image")
    conv = keras.layers.Conv2D(2, 3, padding="same", name="conv")
    shared = keras.layers.ReLU(name="relu")
    x = shared(conv(inputs))
    branch = keras.layers.Conv2D(2, 1, name="branch")(x)
    out = keras.layers.Add(name="add")([x, branch])
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(out))


@pytest.mark.parametrize(
    ("owner", "attribute"),
    [
        ("model", "_is_graph_network"),
        ("model", "_network_nodes"),
        ("layer", "_inbound_nodes"),
        ("layer", "_outbound_nodes"),
        ("tensor", "_keras_history"),
    ],
)
def test_the_private_attributes_still_exist(owner, attribute):
    model = _model()
    objects = {"model": model, "layer": model.get_layer("relu"), "tensor": model.outputs[0]}
    assert hasattr(objects[owner], attribute), f"tf_keras no longer has {owner}.{attribute}"


def test_graph_reads_the_layers_around_a_layer():
    model = _model()
    relu = model.get_layer("relu")
    assert [layer.name for layer in graph.inbound_layers(relu)] == ["conv"]
    assert sorted(layer.name for layer in graph.consumers(relu)) == ["add", "branch"]
    assert graph.source_layer(model.inputs[0]).name == "image"
    assert graph.output_layer(model).name == "pool"
    assert len(graph.calls_in(model, relu)) == 1
    assert graph.is_functional(model)


def test_subclassed_and_keras3_models_are_refused_naming_the_role():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="Expected the teacher to be a functional"):
        graph.check_functional(Subclassed(), "teacher")
    with pytest.raises(TypeError, match="Expected the student to be a tf_keras model"):
        graph.check_functional(object(), "student")
