import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

from kd_keras import compress, export
from kd_keras.models import LMA, build_cnn_classifier
from kd_keras.models.lma import LMAQuantizeConfig, breakpoints
from tests.helpers import assert_config_round_trip


def _inputs(shape, scale=4.0, seed=0):
    # Wider than the default bound of 3, so every piece, the outer ones too, is exercised.
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


@pytest.mark.parametrize("pieces", [2, 3, 4, 7])
def test_initial_function_is_relu_or_identity_exactly(pieces):
    x = _inputs((2, 5, 5, 3))
    np.testing.assert_array_equal(LMA(pieces, init="relu")(x), np.maximum(x, 0.0))
    np.testing.assert_array_equal(LMA(pieces, init="identity")(x), x)


def test_breakpoints_include_zero_and_reach_the_bound():
    assert breakpoints(2, 3.0) == (0.0,)
    assert breakpoints(3, 3.0) == (0.0, 3.0)
    assert breakpoints(4, 3.0) == (-3.0, 0.0, 3.0)
    assert breakpoints(5, 3.0) == (-3.0, 0.0, 1.5, 3.0)
    assert LMA(6, bound=2.0).breakpoints == (-2.0, -1.0, 0.0, 1.0, 2.0)


def test_slopes_are_per_channel_and_follow_the_formula():
    layer = LMA(4, bound=1.0)  # breakpoints (-1, 0, 1)
    layer.build((None, 2))
    layer.set_weights([np.array([0.5, -1.0]), np.array([[1.0, 0.0], [-2.0, 2.0], [3.0, 0.0]])])
    x = np.array([[-2.0, -2.0], [-0.5, -0.5], [0.5, 0.5], [2.0, 2.0]], np.float32)
    # Channel 0: 0.5x + relu(x + 1) - 2 relu(x) + 3 relu(x - 1); channel 1: |x|.
    expected = np.array([[-1.0, 2.0], [0.25, 0.5], [0.75, 0.5], [3.0, 2.0]], np.float32)
    np.testing.assert_allclose(layer(x), expected, atol=1e-6)


def test_slopes_learn_abs_and_leaky_relu():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(-3, 3, size=(256, 2)).astype(np.float32)
    target = np.stack([np.abs(x[:, 0]), np.where(x[:, 1] > 0, x[:, 1], 0.1 * x[:, 1])], -1)
    model = keras.Sequential([keras.Input((2,)), LMA(4, name="lma")])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    before = model.evaluate(x, target, verbose=0)
    model.fit(x, target, batch_size=256, epochs=150, verbose=0)
    after = model.evaluate(x, target, verbose=0)
    assert before > 0.5 and after < before / 100
    assert np.abs(model.predict(x, verbose=0) - target).max() < 0.1
    # |x| = -x + 2 relu(x); leaky = 0.1x + 0.9 relu(x).
    base, hinges = model.get_layer("lma").get_weights()
    np.testing.assert_allclose(base, [-1.0, 0.1], atol=0.05)
    np.testing.assert_allclose(hinges[1], [2.0, 0.9], atol=0.05)


def test_save_and_load_without_custom_objects(tmp_path):
    inputs = keras.Input((4, 4, 3))
    outputs = LMA(5, bound=2.0, init="identity", name="lma")(inputs)
    model = keras.Model(inputs, outputs)
    layer = model.get_layer("lma")
    layer.set_weights([_inputs(w.shape, 1.0, seed=i) for i, w in enumerate(layer.weights)])
    path = tmp_path / "lma.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode, no custom_objects
    x = _inputs((2, 4, 4, 3))
    np.testing.assert_array_equal(loaded(x), model(x))
    assert loaded.get_layer("lma").get_config() == layer.get_config()
    assert_config_round_trip(LMA(3, bound=1.5, init="identity", name="act"))
    assert_config_round_trip(LMAQuantizeConfig(num_bits=8))


def _conv_lma_classifier():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = LMA(5, bound=1.0, name="lma")(x)  # breakpoints (-1, 0, 0.5, 1): all inside the conv range
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    lma = model.get_layer("lma")
    # A function far from ReLU, so every hinge of the int8 graph matters.
    lma.set_weights([_inputs(w.shape, 0.7, seed=i) for i, w in enumerate(lma.weights)])
    return model


@pytest.mark.slow
def test_qat_picks_lma_config_and_exports_full_int8():
    model = _conv_lma_classifier()
    assert compress.unsupported_layers(model) == []
    x = _inputs((32, 6, 6, 1), 1.0)
    y = np.random.default_rng(1).integers(0, 3, size=32)
    qat = compress.quantize_aware(model, calibration_data=[x])  # no quantize_configs needed
    wrapper = qat.get_layer("quant_lma")
    assert isinstance(wrapper.quantize_config, LMAQuantizeConfig)
    # One 8-bit range per intermediate tensor (base, 4 hinges, 4 terms, 3 sums) plus the output.
    assert len(wrapper._quantize_activations) == 12
    np.testing.assert_allclose(qat(x), model(x), atol=0.1)
    qat.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x, y, batch_size=32, epochs=1, verbose=0)

    content = export.to_tflite(qat, "int8")
    interpreter = Interpreter(model_content=content)
    tensors = interpreter.get_tensor_details()
    ops = interpreter._get_ops_details()
    names = [op["op_name"] for op in ops]
    assert {"SUB", "RELU", "MUL", "ADD"} <= set(names)
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE"  # float I/O only
    for op in ops[1:-1]:
        dtypes = {tensors[i]["dtype"] for i in op["outputs"]}
        assert dtypes == {np.int8}, (op["op_name"], dtypes)
    assert not [n for n in names if n.startswith("Flex") or n == "CUSTOM"]

    report = export.parity_report(qat, content, x)
    output_range = np.ptp(qat.predict(x, verbose=0))
    assert report["max_abs_diff"] <= 0.05 * output_range
    assert report["top1_agreement"] >= 0.95


def test_explicit_quantize_config_overrides_the_default():
    model = _conv_lma_classifier()
    qat = compress.quantize_aware(model, quantize_configs={"LMA": compress.OutputQuantizeConfig()})
    assert isinstance(qat.get_layer("quant_lma").quantize_config, compress.OutputQuantizeConfig)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pieces": 1}, "Expected pieces >= 2. Received: pieces=1."),
        ({"pieces": 2.5}, "Received: pieces=2.5."),
        ({"bound": 0.0}, "Expected a finite bound > 0. Received: bound=0.0."),
        ({"bound": float("inf")}, "Received: bound=inf."),
        ({"init": "tanh"}, "Expected init in \\('relu', 'identity'\\). Received: init='tanh'."),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LMA(**kwargs)


def test_unknown_channel_dimension_is_refused():
    with pytest.raises(ValueError, match="known channel"):
        LMA().build(tf.TensorShape([None, None]))


def test_cnn_classifier_with_lma_blocks():
    kwargs = {"width_multiplier": 0.125, "base_filters": (32, 32)}
    keras.utils.set_random_seed(0)
    default = build_cnn_classifier((8, 8, 1), 3, **kwargs)
    keras.utils.set_random_seed(0)
    relu = build_cnn_classifier((8, 8, 1), 3, activation="relu", **kwargs)
    model = build_cnn_classifier((8, 8, 1), 3, activation="lma", **kwargs)

    assert not [layer for layer in default.layers if isinstance(layer, LMA)]
    assert [layer.name for layer in relu.layers] == [layer.name for layer in default.layers]
    for a, b in zip(relu.get_weights(), default.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    lmas = [layer.name for layer in model.layers if isinstance(layer, LMA)]
    assert lmas == ["stage1_block1_lma", "stage2_block1_lma"]
    assert model(_inputs((2, 8, 8, 1))).shape == (2, 3)
    # LMA starts as ReLU, so with the same conv, BN and dense weights the logits are the same.
    for layer in default.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    x = _inputs((2, 8, 8, 1))
    np.testing.assert_allclose(model(x), default(x), atol=1e-5)
    # Pruning wraps LMA (no prunable weights); strip gives the layer back.
    stripped = compress.strip(compress.prune(model, 0.5))
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in model.layers]
    with pytest.raises(ValueError, match="Received: activation='gelu'"):
        build_cnn_classifier((8, 8, 1), 3, activation="gelu")
