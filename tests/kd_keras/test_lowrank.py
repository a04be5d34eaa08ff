import numpy as np
import pytest
import tf_keras as keras

from detection.centernet import build_centernet
from kd_keras import compress
from kd_keras.export import to_tflite
from kd_keras.models import build_cnn_classifier
from reid.models import build_reid_model
from tests.helpers import assert_litert_agrees

FULL = 10**6  # an int rank, capped at each layer's full rank
CONVS = ("stage1_block1_conv", "stage2_block1_conv", "stage3_block1_conv")


def _images(shape, n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(0)
    return build_cnn_classifier((16, 16, 3), 4, 0.25)


def test_full_rank_reproduces_cnn(cnn):
    x = _images((16, 16, 3))
    before = [w.copy() for w in cnn.get_weights()]
    full = compress.decompose(cnn, FULL, only_if_smaller=False)
    np.testing.assert_allclose(full(x).numpy(), cnn(x).numpy(), atol=1e-5)
    for conv in CONVS:
        assert f"{conv}_v" in [layer.name for layer in full.layers]
        assert conv not in [layer.name for layer in full.layers]
    # The input model is untouched and shares nothing with the copy.
    assert all(np.array_equal(a, b) for a, b in zip(before, cnn.get_weights()))
    assert not {id(w) for w in cnn.weights} & {id(w) for w in full.weights}


def test_strides_valid_dilation_bias_and_activation_are_exact():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((29, 23, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="a")(inputs)
    x = keras.layers.Conv2D(5, 3, strides=(2, 1), padding="valid", use_bias=False, name="b")(x)
    x = keras.layers.Conv2D(4, (3, 5), padding="same", dilation_rate=2, name="c")(x)
    x = keras.layers.Conv2D(3, (5, 3), strides=(1, 2), padding="valid", name="d")(x)
    model = keras.Model(inputs, x)
    for layer in model.layers[1:]:
        weights = layer.get_weights()
        layer.set_weights([np.random.default_rng(2).normal(size=w.shape) for w in weights])
    x = _images((29, 23, 3))
    full = compress.decompose(model, FULL, only_if_smaller=False)
    expected = model(x).numpy()
    assert expected.shape == (4, 3, 4, 3)
    np.testing.assert_allclose(full(x).numpy(), expected, atol=1e-5 * np.abs(expected).max())
    a_v, a_h = full.get_layer("a_v"), full.get_layer("a_h")
    assert (a_v.strides, a_h.strides, a_v.kernel_size, a_h.kernel_size) == (
        (2, 1),
        (1, 2),
        (3, 1),
        (1, 3),
    )
    assert not a_v.use_bias and a_h.use_bias and a_h.activation is keras.activations.relu
    assert full.get_layer("c_v").dilation_rate == (2, 1)
    assert full.get_layer("c_h").dilation_rate == (1, 2)
    assert full.get_layer("d_h").kernel.shape == (1, 3, 9, 3)  # R = min(5·4, 3·3)
    report = compress.lowrank_report(model, full)
    assert max(entry["kernel_error"] for entry in report["layers"].values()) < 1e-5


def test_error_grows_as_rank_falls_and_params_match_report(cnn):
    x = _images((16, 16, 3))
    expected = cnn(x).numpy()
    errors, kernel_errors, params = [], [], []
    for rank in (0.75, 0.5, 0.25):
        small = compress.decompose(cnn, rank, exclude=["stage1_block1_conv"])
        report = compress.lowrank_report(cnn, small)
        assert sorted(report["layers"]) == sorted(CONVS[1:])
        for conv, entry in report["layers"].items():
            kernel = cnn.get_layer(conv).kernel.numpy()
            k, _, c_in, c_out = kernel.shape
            assert entry["rank"] == max(1, round(rank * c_out))
            assert entry["params_after"] == entry["rank"] * k * (c_in + c_out)
            # The truncation error is the SVD tail.
            sigma = np.linalg.svd(kernel.transpose(0, 2, 1, 3).reshape(k * c_in, k * c_out))[1]
            tail = np.sqrt(np.sum(sigma[entry["rank"] :] ** 2) / np.sum(sigma**2))
            assert entry["kernel_error"] == pytest.approx(tail, rel=1e-4)
        saved = sum(e["params_before"] - e["params_after"] for e in report["layers"].values())
        assert report["params_before"] == cnn.count_params()
        assert report["params_after"] == small.count_params() == cnn.count_params() - saved
        # Excluded conv and every other layer: same name, same weights.
        for layer in cnn.layers:
            if layer.name not in report["layers"]:
                for a, b in zip(layer.get_weights(), small.get_layer(layer.name).get_weights()):
                    np.testing.assert_array_equal(a, b)
        errors.append(_relative_error(small(x).numpy(), expected))
        kernel_errors.append(np.mean([e["kernel_error"] for e in report["layers"].values()]))
        params.append(report["params_after"])
    assert errors == sorted(errors) and kernel_errors == sorted(kernel_errors)
    assert params == sorted(params, reverse=True)
    # rank=1.0 (R = Cout) saves nothing on these widening convs: the model comes back whole.
    whole = compress.decompose(cnn, 1.0)
    assert [layer.name for layer in whole.layers] == [layer.name for layer in cnn.layers]
    assert compress.lowrank_report(cnn, whole)["ratio"] == 1.0


@pytest.mark.parametrize("kind", ["reid", "centernet"])
def test_add_and_several_outputs(kind):
    keras.utils.set_random_seed(3)
    if kind == "reid":
        model = build_reid_model((32, 16, 3), 4, width=0.25, embedding_dim=8)
        shape, one_by_one = (32, 16, 3), "stage2_block1_proj_conv"
    else:
        model = build_centernet((32, 32, 3), 2, width=0.25)
        shape, one_by_one = (32, 32, 3), "lateral8"
    x = _images(shape, n=2)
    expected = model(x)
    full = compress.decompose(model, FULL, only_if_smaller=False)
    for got, want in zip(full(x), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    small = compress.decompose(model, 0.5)
    assert [o.shape for o in small(x)] == [o.shape for o in expected]
    assert compress.lowrank_report(model, small)["ratio"] < 0.8
    names = [layer.name for layer in small.layers]
    assert one_by_one in names and small.output_names == model.output_names
    if kind == "centernet":  # fused bias + ReLU conv heads
        assert {"heatmap_hidden_v", "heatmap_hidden_h", "neck"} <= set(names)
    else:
        assert compress.wrapped_layer_name(small, "embedding") == "embedding"


@pytest.mark.slow
def test_decomposed_model_saves_prunes_and_exports_int8(cnn, tmp_path):
    x = _images((16, 16, 3), n=64, seed=4)
    small = compress.decompose(cnn, 0.5)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x[:4]).numpy(), small(x[:4]).numpy(), atol=1e-6)

    pruned = compress.prune(small, 0.5)
    pruned_names = [layer.name for layer in pruned.layers]
    assert compress.wrapped_layer_name(pruned, "stage2_block1_conv_h") in pruned_names
    assert pruned(x[:2]).shape == (2, 4)

    qat = compress.quantize_aware(small, calibration_data=np.array_split(x, 4))
    assert_litert_agrees(small, to_tflite(qat, "int8"), x, top1=0.9, correlation=0.95)


def test_bad_arguments_raise():
    inputs = keras.Input((8, 8, 4))
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared_conv")
    model = keras.Model(inputs, shared(shared(inputs)))
    plain = build_cnn_classifier((8, 8, 3), 2, 0.25)
    for rank in (0, 1.5, -2, 0.0, True):
        with pytest.raises(ValueError, match="rank="):
            compress.decompose(plain, rank)
    with pytest.raises(ValueError, match="'shared_conv' is called 2 times"):
        compress.decompose(model, 0.5)
    nested = keras.Model(inputs, keras.Sequential([keras.layers.Dense(2)], name="inner")(inputs))
    with pytest.raises(ValueError, match="'inner' is a nested model"):
        compress.decompose(nested, 0.5)
    with pytest.raises(ValueError, match="exclude="):
        compress.decompose(plain, 0.5, exclude=["missing"])
    grouped_in = keras.Input((8, 8, 4))
    grouped = keras.Model(grouped_in, keras.layers.Conv2D(8, 3, groups=2, name="g")(grouped_in))
    with pytest.raises(ValueError, match="layer='g'"):
        compress.decompose(grouped, 0.5)
