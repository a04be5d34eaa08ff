import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_keras import Distiller, FeatureDistillation, LogitsDistillation, compress
from tests.helpers import assert_config_round_trip
from tests.kd_keras.compress_helpers import (
    SHAPE,
    accuracy,
    blob_data,
    conv_bn_model,
    trained_model,
)

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def teacher():
    model, x, y = trained_model(width=8, epochs=8, name="teacher")
    return model, x, y


def _fit(model, x, y, epochs=1, callbacks=(), lr=0.01):
    model.compile(keras.optimizers.Adam(lr), loss=CE)
    return model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=list(callbacks))


def test_constant_pruning_reaches_sparsity_after_strip():
    x, y = blob_data(32)
    model = conv_bn_model()
    pruned = compress.prune(model, 0.6, frequency=1)
    assert compress.is_pruned(pruned) and not compress.is_pruned(model)
    _fit(pruned, x, y, callbacks=[compress.UpdatePruningStep()])
    stripped = compress.strip(pruned)
    assert not compress.is_pruned(stripped)
    report = compress.sparsity_report(stripped)
    for name in ("conv1", "conv2", "logits"):
        kernel = stripped.get_layer(name).kernel.numpy()
        assert np.sum(kernel == 0) == int(round(0.6 * kernel.size)), name
    assert report["total"] == pytest.approx(0.6, abs=0.01)
    assert compress.sparsity_report(model)["total"] == 0.0  # the original is left untouched


def test_excluded_layers_stay_dense():
    x, y = blob_data(32)
    pruned = compress.prune(conv_bn_model(), 0.5, frequency=1, exclude=["conv1"])
    assert "conv1" in [layer.name for layer in pruned.layers]  # not wrapped
    _fit(pruned, x, y, callbacks=[compress.UpdatePruningStep()])
    report = compress.sparsity_report(compress.strip(pruned))
    assert report["conv1"] == 0.0 and report["conv2"] == 0.5 and report["logits"] == 0.5
    with pytest.raises(ValueError, match="Cannot exclude layers.*Received: exclude=\\['nope'\\]"):
        compress.prune(conv_bn_model(), 0.5, exclude=["nope"])


def test_polynomial_schedule_ramps_to_final_sparsity():
    schedule = compress.pruning_schedule(0.8, "polynomial", begin_step=0, end_step=10, frequency=1)
    values = [float(schedule(tf.constant(step))[1]) for step in (0, 5, 10)]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < values[1] < 0.8
    assert values[2] == pytest.approx(0.8)
    x, y = blob_data(32)
    pruned = compress.prune(conv_bn_model(), 0.8, "polynomial", end_step=4, frequency=1)
    _fit(pruned, x, y, epochs=2, callbacks=[compress.UpdatePruningStep()])  # 4 steps
    assert compress.sparsity_report(compress.strip(pruned))["total"] == pytest.approx(0.8, abs=0.01)


def test_polynomial_needs_end_step():
    with pytest.raises(ValueError, match="needs end_step > begin_step"):
        compress.pruning_schedule(0.5, "polynomial")
    with pytest.raises(ValueError, match=r"Expected sparsity in \[0, 1\)"):
        compress.pruning_schedule(1.0)


def test_two_four_structured_sparsity():
    x, y = blob_data(32)
    pruned = compress.prune(conv_bn_model(width=8), m_by_n=(2, 4), frequency=1)
    _fit(pruned, x, y, callbacks=[compress.UpdatePruningStep()])
    stripped = compress.strip(pruned)
    # conv2 has 8 input channels: in each block of 4 consecutive input-channel weights, 2 are 0.
    kernel = stripped.get_layer("conv2").kernel.numpy()  # [3, 3, c_in, c_out]
    blocks = np.moveaxis(kernel, 2, -1).reshape(-1, 4)
    assert np.all(np.sum(blocks == 0, axis=-1) >= 2)
    dense = stripped.get_layer("logits").kernel.numpy()  # [c_in, c_out]
    assert np.all(np.sum(dense.T.reshape(-1, 4) == 0, axis=-1) >= 2)


def test_kd_aware_pruning_fine_tunes_checkpoints_and_strips(teacher, tmp_path):
    teacher_model, x, y = teacher
    student = conv_bn_model(width=4, name="student", seed=1)

    def distiller(model):
        term = LogitsDistillation(temperature=2.0)
        kd = Distiller(teacher_model, model, term, 0.9, 0.1)
        kd.compile(keras.optimizers.Adam(0.01), loss=CE)
        return kd

    pruned = compress.prune(student, 0.5, frequency=1)
    kd = distiller(pruned)
    before = kd.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["distillation_loss"]
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    kd.fit(
        x, y, batch_size=16, epochs=3, verbose=0, callbacks=[compress.UpdatePruningStep(), backup]
    )
    after = kd.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["distillation_loss"]
    assert after < 0.8 * before  # fine-tuning with the teacher lowers the distillation loss
    # Checkpoint: a fresh Distiller around a fresh pruned student restores masks and weights.
    kd.save_weights(tmp_path / "ckpt")
    restored = distiller(compress.prune(conv_bn_model(width=4, name="student", seed=7), 0.5))
    restored.load_weights(tmp_path / "ckpt").expect_partial()
    np.testing.assert_allclose(restored.predict(x, verbose=0), kd.predict(x, verbose=0), atol=1e-5)
    # Strip through the Distiller: the deployable student with its zeros.
    stripped = compress.strip(kd)
    assert compress.sparsity_report(stripped)["total"] == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), kd.predict(x, verbose=0), atol=1e-4)


def test_kd_aware_qat_with_hint_term_lowers_distillation_loss(teacher, tmp_path):
    teacher_model, x, y = teacher
    student = conv_bn_model(width=4, name="student", seed=1)
    qat = compress.quantize_aware(student)
    assert compress.is_quantize_aware(qat) and not compress.is_quantize_aware(student)
    layer = compress.wrapped_layer_name(qat, "features")
    assert layer == "quant_features"
    terms = [
        LogitsDistillation(temperature=2.0),
        FeatureDistillation("features", layer, name="hint"),
    ]
    kd = Distiller(teacher_model, qat, terms, [0.9, 0.1], 0.1)
    kd.compile(keras.optimizers.Adam(0.01), loss=CE)
    before = kd.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["distillation_loss"]
    kd.fit(x, y, batch_size=16, epochs=3, verbose=0)
    after = kd.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["distillation_loss"]
    assert after < 0.8 * before
    np.testing.assert_allclose(kd(x[:4]), qat(x[:4]), atol=1e-6)
    # Checkpoint: weights and learned quantization ranges come back in a fresh Distiller.
    kd.save_weights(tmp_path / "qat_ckpt")
    fresh = compress.quantize_aware(conv_bn_model(width=4, name="student", seed=5))
    restored = Distiller(
        teacher_model,
        fresh,
        [LogitsDistillation(temperature=2.0), FeatureDistillation("features", layer, name="hint")],
        [0.9, 0.1],
        0.1,
    )
    restored.load_weights(tmp_path / "qat_ckpt").expect_partial()
    np.testing.assert_allclose(restored.predict(x, verbose=0), kd.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_pqat_preserves_sparsity(teacher):
    teacher_model, x, y = teacher
    pruned = compress.prune(conv_bn_model(width=4, name="student", seed=1), 0.5, frequency=1)
    _fit(pruned, x, y, callbacks=[compress.UpdatePruningStep()])
    stripped = compress.strip(pruned)
    qat = compress.quantize_aware(stripped)  # sparsity detected: pruning-preserving scheme
    kd = Distiller(teacher_model, qat, LogitsDistillation(temperature=2.0), 0.9, 0.1)
    kd.compile(keras.optimizers.Adam(0.05), loss=CE)
    kd.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for name, kernel in compress.quantized_kernels(kd).items():
        zeros = stripped.get_layer(name).kernel.numpy() == 0
        assert np.all(kernel.numpy()[zeros] == 0), name
        assert np.mean(kernel.numpy() == 0) == pytest.approx(0.5, abs=0.02)
    # Plain QAT lets the zeros drift: the scheme is what keeps them.
    plain = compress.quantize_aware(stripped, preserve_sparsity=False)
    _fit(plain, x, y, epochs=2, lr=0.05)
    assert np.mean(compress.quantized_kernels(plain)["conv2"].numpy() == 0) < 0.1


@keras.saving.register_keras_serializable(package="kd_keras_tests")
class Square(keras.layers.Layer):
    def call(self, inputs):
        return tf.square(inputs)


def _model_with_custom_layer():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = Square(name="square")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_unsupported_layer_error_names_layer_and_fix():
    keras.utils.set_random_seed(0)
    model = _model_with_custom_layer()
    with pytest.raises(ValueError, match="cannot quantize layer.*'square' \\(Square\\)") as info:
        compress.quantize_aware(model)
    assert "OutputQuantizeConfig" in str(info.value) and "Received: layers=['square']" in str(
        info.value
    )
    qat = compress.quantize_aware(
        model, quantize_configs={"Square": compress.OutputQuantizeConfig()}
    )
    assert "quant_square" in [layer.name for layer in qat.layers]
    x = np.random.default_rng(0).normal(size=(8, *SHAPE)).astype(np.float32)
    qat(x, training=True)  # a training pass records the activation ranges
    # Within about one step of the output quantizer, whose range one pass barely narrows.
    np.testing.assert_allclose(qat(x), model(x), atol=0.05)
    assert_config_round_trip(compress.OutputQuantizeConfig(num_bits=8))


def test_lambda_layer_is_refused():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="'double' \\(Lambda\\).*Lambda must first become"):
        compress.quantize_aware(model)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def test_subclassed_model_is_refused():
    model = _Subclassed()
    model(np.zeros((1, 3), np.float32))
    for action in (compress.prune, compress.quantize_aware):
        with pytest.raises(TypeError, match="subclassed"):
            action(model)


def test_quantize_aware_refuses_unstripped_model():
    with pytest.raises(ValueError, match="strip"):
        compress.quantize_aware(compress.prune(conv_bn_model(), 0.5))


# === Choosing the sparsity ===


def test_knee_found_on_synthetic_curve():
    sparsities = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    # Flat until 0.6, then a steep fall: the knee is 0.6.
    accuracies = [0.95, 0.95, 0.948, 0.946, 0.944, 0.94, 0.935, 0.7, 0.4, 0.1]
    curve = compress.choose_sparsity(sparsities, accuracies)
    assert curve.chosen == pytest.approx(0.6) and curve.method == "knee"
    budget = compress.choose_sparsity(sparsities, accuracies, max_drop=0.012)
    assert budget.chosen == pytest.approx(0.5) and budget.method == "max_drop"


def test_choose_sparsity_rejects_bad_curves():
    with pytest.raises(ValueError, match="at least three"):
        compress.choose_sparsity([0.0, 0.5], [1.0, 0.9])
    with pytest.raises(ValueError, match="increasing"):
        compress.choose_sparsity([0.0, 0.5, 0.4], [1.0, 0.9, 0.8])


def test_adaptive_bn_sets_statistics_to_batch_average():
    model = conv_bn_model()
    x, _ = blob_data(32)
    batches = [x[:16], x[16:]]
    compress.adapt_batchnorm(model, batches)
    bn = model.get_layer("bn1")
    conv = keras.Model(model.input, model.get_layer("conv1").output)
    means = [conv(b).numpy().mean(axis=(0, 1, 2)) for b in batches]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(means, axis=0), atol=1e-5)
    assert bn.momentum == 0.99 and bn.trainable


def test_sparsity_curve_with_adaptive_bn_and_saved_outputs(teacher, tmp_path):
    model, x, y = teacher
    weights = [w.copy() for w in model.get_weights()]
    calibration = [x[i : i + 32] for i in range(0, 96, 32)]
    grid, scores = compress.sparsity_curve(
        model, [0.3, 0.6, 0.95], lambda m: accuracy(m, x, y), calibration
    )
    assert grid == (0.0, 0.3, 0.6, 0.95)
    assert scores[0] == pytest.approx(accuracy(model, x, y))
    assert scores[-1] < scores[0]  # 95% of the weights gone hurts
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)  # the model itself is not pruned
    curve = compress.choose_sparsity(grid, scores, max_drop=1.0)
    assert curve.chosen == 0.95
    paths = compress.save_curve(curve, tmp_path)
    assert json.loads(Path(paths["json"]).read_text())["chosen"] == 0.95
    assert Path(paths["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrated_ranges_stop_short_qat_from_clipping_large_activations():
    # Outputs reach beyond ±20, far outside TF-MOT's initial [-6, 6] activation range.
    inputs = keras.Input((4,))
    scale = keras.initializers.Constant(10.0)
    outputs = keras.layers.Dense(3, kernel_initializer=scale, name="wide")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).uniform(-1, 1, (64, 4)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    assert np.abs(expected).max() > 20

    plain = compress.quantize_aware(model)
    assert np.abs(plain.predict(x, verbose=0)).max() <= 6.0 + 1e-4  # clipped

    calibrated = compress.quantize_aware(model, calibration_data=np.array_split(x, 4))
    output_range = np.ptp(expected)  # the calibrated range spans the outputs (and 0)
    np.testing.assert_allclose(
        calibrated.predict(x, verbose=0), expected, atol=output_range / 255 + 1e-4
    )
    # Calibration leaves the weights alone, and the model still trains (ranges keep moving).
    np.testing.assert_array_equal(compress.quantized_kernels(calibrated)["wide"].numpy(), 10.0)
    assert compress.calibrate_quantization_ranges(calibrated, [x[:8]]) >= 2
    with pytest.raises(ValueError, match="needs a model from quantize_aware"):
        compress.calibrate_quantization_ranges(model, [x])
    with pytest.raises(ValueError, match="got no batch"):
        compress.calibrate_quantization_ranges(calibrated, [])
