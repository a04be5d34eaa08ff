"""Standard backbones from tf_keras.applications: flat taps, weights files, prune, QAT, int8."""

import numpy as np
import pytest
import tf_keras as keras

from kd_keras import compress
from kd_keras.export import to_tflite
from kd_keras.models.applications import APPLICATIONS, application_features, check_application
from kd_keras.models.layers import InputAffine
from tests.helpers import assert_litert_agrees

SIZE = 32
WIDTHS = {"mobilenet_v2": 0.35, "mobilenet_v3_small": 0.75, "resnet50": 1.0, "efficientnet_b0": 1.0}


def _classifier(backbone: str, weights=None, classes: int = 3) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    features = application_features(inputs, backbone, WIDTHS[backbone], weights)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features[32])
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(pooled), name=backbone)


def _data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] whose class is the brightest colour channel."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (n, SIZE, SIZE, 3)).astype(np.float32)
    y = np.arange(n) % 3
    x[np.arange(n), :, :, y] += 0.5
    return x, y


def _fit(model: keras.Model, callbacks=(), epochs: int = 2) -> None:
    x, y = _data(16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=list(callbacks))


@pytest.mark.parametrize("backbone", list(APPLICATIONS))
def test_taps_are_at_their_strides_in_one_flat_graph(backbone):
    inputs = keras.Input((64, 64, 3))
    features = application_features(inputs, backbone, WIDTHS[backbone])
    assert {stride: tuple(f.shape[1:3]) for stride, f in features.items()} == {
        4: (16, 16),
        8: (8, 8),
        16: (4, 4),
        32: (2, 2),
    }
    model = keras.Model(inputs, list(features.values()))
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert isinstance(model.layers[1], InputAffine)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(APPLICATIONS))
def test_each_backbone_prunes_quantizes_and_runs_full_int8_in_litert(backbone):
    model = _classifier(backbone)
    pruned = compress.prune(model, 0.5, frequency=1)
    _fit(pruned, [compress.UpdatePruningStep()], epochs=1)
    stripped = compress.strip(pruned)
    assert compress.kernel_sparsity(stripped) == pytest.approx(0.5, abs=0.05)
    x, _ = _data(16)
    refusal = compress.qat_refusal(stripped)
    if backbone == "mobilenet_v3_small":
        # tf_keras builds its hard-swish from TFOpLambda layers TF-MOT cannot wrap: PTQ instead.
        assert "TFOpLambda" in refusal and "hard-swish" in refusal
        with pytest.raises(ValueError, match="post-training calibration"):
            compress.quantize_aware(stripped)
        flatbuffer = to_tflite(stripped, "int8", representative_data=x)
        reference = stripped
    else:
        assert refusal is None
        qat = compress.quantize_aware(stripped, preserve_sparsity=True, calibration_data=[x])
        if backbone != "efficientnet_b0":
            # Pruned to 50% at 32x32, efficientnet_b0's QAT steps turn its stem conv to NaN by
            # the third step; it is a teacher backbone, exported here with calibrated ranges.
            _fit(qat, epochs=1)
        flatbuffer = to_tflite(qat, "int8")
        reference = qat
    measured = assert_litert_agrees(reference, flatbuffer, x, correlation=0.9)
    assert measured["top1"] >= 0.75, measured


def test_a_weights_file_loads_into_the_same_network_and_a_mismatched_one_is_refused(tmp_path):
    source = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, alpha=0.35
    )
    path = tmp_path / "mobilenet_v2_0.35_no_top.h5"
    source.save_weights(path)
    model = _classifier("mobilenet_v2", weights=str(path))
    for name in ("Conv1", "block_16_project", "Conv_1"):
        for loaded, saved in zip(
            model.get_layer(name).get_weights(), source.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(loaded, saved)
    wider = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, alpha=0.5
    )
    wider.save_weights(tmp_path / "wider.h5")
    with pytest.raises(ValueError, match="headless network .* at the same width"):
        _classifier("mobilenet_v2", weights=str(tmp_path / "wider.h5"))


@pytest.mark.slow
def test_resnet50_weights_trained_on_bgr_take_rgb_images(tmp_path):
    source = keras.applications.ResNet50(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None
    )
    path = tmp_path / "resnet50_no_top.h5"
    source.save_weights(path)
    inputs = keras.Input((SIZE, SIZE, 3))
    ours = keras.Model(inputs, application_features(inputs, "resnet50", 1.0, str(path))[32])
    rgb = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    # What Keras' own preprocessing feeds the source network: BGR, 0..255, ImageNet mean off.
    caffe = keras.applications.resnet50.preprocess_input(rgb * 255.0)
    np.testing.assert_allclose(ours(rgb).numpy(), source(caffe).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("backbone", "width", "weights", "message"),
    [
        ("mobilenet_v4", 1.0, None, "Expected student_model.backbone in"),
        ("resnet50", 0.5, None, "resnet50 has no width multiplier"),
        ("mobilenet_v2", 0.6, "imagenet", r"at widths \(0.35, 0.5, 0.75, 1.0, 1.3, 1.4\)"),
        ("mobilenet_v3_small", 0.5, "imagenet", r"at widths \(0.75, 1.0\)"),
        ("efficientnet_b0", 1.0, "no/such/file.h5", "no file is at 'no/such/file.h5'"),
    ],
)
def test_bad_backbone_settings_are_refused_naming_the_key(backbone, width, weights, message):
    with pytest.raises(ValueError, match=message):
        check_application(backbone, width, weights, "student_model")


def test_an_input_that_is_not_a_multiple_of_32_is_refused():
    with pytest.raises(ValueError, match="multiples of 32"):
        application_features(keras.Input((40, 40, 3)), "mobilenet_v2", 0.35)


def test_input_affine_maps_unit_range_to_the_weights_range_and_round_trips():
    layer = InputAffine((2.0, 2.0, 255.0), (-1.0, -1.0, -123.68))
    x = np.array([[[[0.0, 1.0, 0.5]]]], np.float32)
    np.testing.assert_allclose(layer(x).numpy(), [[[[-1.0, 1.0, 3.82]]]], rtol=1e-5)
    clone = InputAffine.from_config(layer.get_config())
    assert (clone.scale, clone.offset) == (layer.scale, layer.offset)
