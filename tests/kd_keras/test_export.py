import json

import numpy as np
import pytest
import tf_keras as keras

from kd_keras import compress, export
from tests.kd_keras.compress_helpers import accuracy, trained_model


@pytest.fixture(scope="module")
def trained():
    return trained_model(width=16, epochs=10)


def test_float32_parity_with_keras(trained, tmp_path):
    model, x, _ = trained
    path = tmp_path / "model.tflite"
    content = export.to_tflite(model, "float32", path=path)
    assert path.read_bytes() == content
    report = export.parity_report(model, path, x)
    assert report["top1_agreement"] == 1.0
    assert report["max_abs_diff"] < 1e-4 and report["examples"] == len(x)
    details = json.loads(export.io_json_path(path).read_text())
    assert details["mode"] == "float32"
    assert details["inputs"][0]["dtype"] == "float32" and details["inputs"][0]["shape"][1:] == [
        8,
        8,
        1,
    ]


@pytest.mark.parametrize(("mode", "tolerance"), [("float16", 1e-2), ("dynamic", 0.2)])
def test_post_training_float_modes_stay_close(trained, mode, tolerance):
    model, x, y = trained
    content = export.to_tflite(model, mode)
    report = export.parity_report(model, content, x)
    assert report["mean_abs_diff"] < tolerance
    assert report["top1_agreement"] >= 0.95
    float32 = export.tflite_size(export.to_tflite(model, "float32"))["bytes"]
    assert export.tflite_size(content)["bytes"] < float32  # smaller weights


def test_full_int8_with_representative_data(trained, tmp_path):
    model, x, y = trained
    path = tmp_path / "int8.tflite"
    export.to_tflite(model, "int8", representative_data=x[:64], int8_io=True, path=path)
    details = json.loads((tmp_path / "int8.io.json").read_text())
    io = details["inputs"][0]
    assert io["dtype"] == "int8" and io["scale"] > 0
    # The recorded parameters are the runtime's: quantizing a pixel by hand matches LiteRT's.
    runtime = export.io_details(path)
    assert runtime["inputs"][0]["scale"] == pytest.approx(io["scale"])
    assert details["outputs"][0]["dtype"] == "int8"
    float_accuracy = accuracy(model, x, y)
    int8_accuracy = export.evaluate_tflite(path, x, y)
    assert float_accuracy > 0.8
    assert int8_accuracy >= float_accuracy - 0.03  # stated tolerance: 3 points
    assert export.parity_report(model, path, x)["top1_agreement"] >= 0.95
    float32 = export.tflite_size(export.to_tflite(model, "float32"))["bytes"]
    assert export.tflite_size(path)["bytes"] < 0.6 * float32


@pytest.mark.parametrize("qat", [False, True], ids=["calibrated", "qat"])
def test_camera_native_input_takes_pixels_and_computes_the_float_input_outputs(trained, qat):
    from kd_runtime import TFLiteModel

    model, x, y = trained
    # Camera pixels p, normalised as x = (p − 128) / std: the inputs are whole pixel values.
    std = 127.0 / float(np.abs(x).max())
    pixels = np.clip(np.rint(x * std + 128), 0, 255).astype(np.uint8)
    x = (pixels.astype(np.float32) - 128) / std
    model = compress.quantize_aware(model) if qat else model
    calibration = None if qat else x[:64]
    floats = export.to_tflite(model, "int8", representative_data=calibration)
    native = export.to_tflite(
        model, "int8", representative_data=calibration, pixel_input=(128, std)
    )
    details = export.io_details(native)["inputs"][0]
    assert details["dtype"] == "uint8"
    assert details["scale"] == pytest.approx(1 / std) and details["zero_point"] == 128
    (from_pixels,) = TFLiteModel(native)(pixels).values()
    np.testing.assert_allclose(from_pixels, export.tflite_predict(floats, x), atol=1e-6)
    assert export.evaluate_tflite(native, x, y) == export.evaluate_tflite(floats, x, y)


def test_camera_native_input_is_refused_where_uint8_cannot_carry_it(trained):
    model, x, _ = trained
    with pytest.raises(ValueError, match="needs mode='int8'"):
        export.to_tflite(model, "float32", pixel_input=(0, 255))
    with pytest.raises(ValueError, match="integer mean in 0..255"):
        export.to_tflite(model, "int8", representative_data=x, pixel_input=(127.5, 127.5))


def test_int8_without_representative_data_fails_clearly(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="needs a representative dataset"):
        export.to_tflite(model, "int8")
    with pytest.raises(ValueError, match="int8 inputs/outputs need mode='int8'"):
        export.to_tflite(model, "float16", int8_io=True)
    with pytest.raises(ValueError, match="Expected mode in"):
        export.to_tflite(model, "int4")


@pytest.mark.slow
def test_qat_student_exports_int8_without_calibration(trained):
    model, x, y = trained
    qat = compress.quantize_aware(model)
    qat.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x, y, batch_size=16, epochs=1, verbose=0)
    content = export.to_tflite(qat, "int8", int8_io=True)
    assert export.io_details(content)["inputs"][0]["dtype"] == "int8"
    report = export.parity_report(qat, content, x)
    assert report["top1_agreement"] >= 0.97
    assert export.evaluate_tflite(content, x, y) >= accuracy(qat, x, y) - 0.03
    with pytest.raises(ValueError, match="exports as mode='int8'"):
        export.to_tflite(qat, "dynamic")


def test_pruning_shows_in_gzip_size(trained):
    model, x, _ = trained
    dense = export.tflite_size(export.to_tflite(model, "float32"))
    sparse_model = keras.models.clone_model(model)
    sparse_model.set_weights(model.get_weights())
    compress.zero_smallest(sparse_model, 0.8)
    sparse = export.tflite_size(export.to_tflite(sparse_model, "float32"))
    assert sparse["bytes"] == pytest.approx(dense["bytes"], rel=0.02)  # zeros still stored
    assert sparse["gzip_bytes"] < 0.7 * dense["gzip_bytes"]
    assert dense["gzip_bytes"] < dense["bytes"]


def test_pruned_model_must_be_stripped_before_export(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="Strip the pruning wrappers"):
        export.to_tflite(compress.prune(model, 0.5))


def test_latency_is_a_median_of_positive_timings(trained):
    model, _, _ = trained
    content = export.to_tflite(model, "float32")
    latency = export.tflite_latency(content, runs=20, warmup=2)
    assert 0 < latency < 100  # milliseconds, for a tiny model
    with pytest.raises(ValueError, match="runs >= 1"):
        export.tflite_latency(content, runs=0)


def test_subclassed_model_and_missing_file_are_refused(tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="subclassed"):
        export.to_tflite(net)
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        export.tflite_size(tmp_path / "missing.tflite")


def test_representative_dataset_yields_single_examples():
    x = np.arange(20, dtype=np.float32).reshape(5, 2, 2, 1)
    batches = list(export.representative_dataset(x, count=3)())
    assert len(batches) == 3 and batches[0][0].shape == (1, 2, 2, 1)
    with pytest.raises(ValueError, match="at least one example"):
        export.representative_dataset(x[:0])
