import contextlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_keras import Distiller, FeatureDistillation, LogitsDistillation, losses, schedules
from tests.helpers import assert_config_round_trip, tiny_classifier, tiny_data

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _pair(teacher_width=8, student_width=4, classes=3):
    keras.utils.set_random_seed(0)
    teacher = tiny_classifier(classes, teacher_width, name="teacher")
    student = tiny_classifier(classes, student_width, name="student")
    return teacher, student


def test_teacher_frozen_and_call_is_student():
    teacher, student = _pair()
    x, y = tiny_data(8)
    before = [w.numpy().copy() for w in teacher.weights]
    student_before = [w.numpy().copy() for w in student.weights]
    distiller = Distiller(teacher, student, LogitsDistillation(2.0), [0.5], 0.5)
    distiller.compile(keras.optimizers.Adam(0.05), loss=CE, metrics=["accuracy"])
    distiller.fit(x, y, batch_size=4, epochs=2, verbose=0)
    for a, b in zip(before, teacher.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(student_before, student.weights))
    np.testing.assert_array_equal(distiller(x).numpy(), student(x).numpy())
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0))
    assert not teacher.trainable


def test_loss_value_by_hand():
    teacher, student = _pair()
    x, y = tiny_data(4)
    alpha, temperature = 0.7, 3.0
    distiller = Distiller(teacher, student, LogitsDistillation(temperature), [alpha], 1 - alpha)
    distiller.compile("sgd", loss=CE)
    result = distiller.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    t, s = teacher(x).numpy(), student(x).numpy()
    kd = losses.soft_target_kl(t, s, temperature).numpy().mean()
    ce = keras.losses.sparse_categorical_crossentropy(y, s, from_logits=True).numpy().mean()
    np.testing.assert_allclose(result["distillation_loss"], alpha * kd, rtol=1e-5)
    np.testing.assert_allclose(result["student_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(result["loss"], (1 - alpha) * ce + alpha * kd, rtol=1e-5)


def test_feature_term_with_adapter_trains_adapter():
    teacher, student = _pair(teacher_width=8, student_width=4)
    x, y = tiny_data(8)
    hint = FeatureDistillation("features", "features", name="hint")
    distiller = Distiller(
        teacher, student, [LogitsDistillation(2.0, name="logits_kd"), hint], [0.5, 1.0], 0.5
    )
    assert hint.projection is not None and hint.projection.kernel.shape == (4, 8)
    kernel_before = hint.projection.kernel.numpy().copy()
    distiller.compile(keras.optimizers.Adam(0.05), loss=CE)
    history = distiller.fit(x, y, batch_size=4, epochs=3, verbose=0).history
    assert not np.array_equal(kernel_before, hint.projection.kernel.numpy())
    assert {"hint_loss", "logits_kd_loss", "student_loss", "total_loss"} <= set(history)
    assert history["hint_loss"][-1] < history["hint_loss"][0]


def test_multiple_output_shapes_through_class_subset():
    keras.utils.set_random_seed(0)
    teacher = tiny_classifier(5, 8, name="teacher")
    student = tiny_classifier(2, 4, name="student")
    term = LogitsDistillation(2.0, teacher_class_indices=[3, 1])
    distiller = Distiller(teacher, student, term, [1.0], 0.0)
    distiller.compile("sgd", loss=CE)
    x, y = tiny_data(4, num_classes=2)
    result = distiller.evaluate(x, y, return_dict=True, verbose=0)
    expected = losses.soft_target_kl(teacher(x).numpy()[:, [3, 1]], student(x), 2.0).numpy()
    np.testing.assert_allclose(result["distillation_loss"], expected.mean(), rtol=1e-5)


def test_probability_teacher_declared_as_such_trains():
    keras.utils.set_random_seed(0)
    teacher = tiny_classifier(3, 8, name="teacher", softmax=True)
    student = tiny_classifier(3, 4, name="student")
    distiller = Distiller(
        teacher, student, LogitsDistillation(2.0, teacher_outputs="probabilities")
    )
    distiller.compile("sgd", loss=CE)
    x, y = tiny_data(4)
    result = distiller.evaluate(x, y, return_dict=True, verbose=0)
    logits = np.log(teacher(x).numpy())
    expected = losses.soft_target_kl(logits, student(x), 2.0).numpy().mean()
    np.testing.assert_allclose(result["distillation_loss"], expected, rtol=1e-4)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: Distiller(
                tiny_classifier(3, softmax=True), tiny_classifier(3), LogitsDistillation()
            ),
            ValueError,
            "ends in a softmax, but its outputs were declared as logits",
        ),
        (
            lambda: Distiller(
                tiny_classifier(3),
                tiny_classifier(3),
                LogitsDistillation(teacher_outputs="probabilities"),
            ),
            ValueError,
            "has no softmax, but its outputs were declared as probabilities",
        ),
        (
            lambda: Distiller(tiny_classifier(5), tiny_classifier(3), LogitsDistillation()),
            ValueError,
            "teacher gives 5 classes but the student predicts 3",
        ),
        (
            lambda: Distiller(
                tiny_classifier(5),
                tiny_classifier(2),
                LogitsDistillation(teacher_class_indices=[1, 9]),
            ),
            ValueError,
            r"must lie in \[0, 5\)",
        ),
        (
            lambda: Distiller(tiny_classifier(3), tiny_classifier(3), FeatureDistillation("nope")),
            ValueError,
            "has no layer 'nope'",
        ),
        (
            lambda: Distiller(tiny_classifier(3), _Subclassed(), LogitsDistillation()),
            TypeError,
            r"student to be a functional or Sequential tf_keras model.*"
            r"Received: student=_Subclassed \(subclassed\)",
        ),
        (
            lambda: Distiller(
                tiny_classifier(3), tiny_classifier(3), [LogitsDistillation()], [1, 2]
            ),
            ValueError,
            "one distillation weight per term",
        ),
        (
            lambda: Distiller(None, tiny_classifier(3), LogitsDistillation()),
            ValueError,
            "teacher_output_shape",
        ),
        (
            lambda: LogitsDistillation(loss="mse"),
            ValueError,
            "Received: loss='mse'",
        ),
    ],
    ids=[
        "softmax-as-logits",
        "logits-as-probabilities",
        "class-mismatch",
        "subset-out-of-range",
        "unknown-layer",
        "subclassed",
        "weight-count",
        "offline-without-shape",
        "bad-loss",
    ],
)
def test_bad_inputs_are_refused(build, error, message):
    with pytest.raises(error, match=message):
        build()


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(keras.layers.Flatten()(x))


def test_config_round_trips():
    assert_config_round_trip(
        LogitsDistillation(schedules.Cosine(6.0, 1.0, 50), "soft_ce", teacher_class_indices=[0, 2])
    )
    assert_config_round_trip(LogitsDistillation(4.0, "dkd", dkd_weights=(0.5, 4.0)))
    assert_config_round_trip(FeatureDistillation("a", "b", loss="cross_entropy", adapter="always"))
    teacher, student = _pair()
    distiller = Distiller(
        teacher,
        student,
        [
            LogitsDistillation(schedules.Linear(4.0, 1.0, 10)),
            FeatureDistillation("features", "features"),
        ],
        [0.9, schedules.Step([5], [0.0, 1.0])],
        0.1,
    )
    config = distiller.get_config()
    rebuilt = Distiller.from_config(config)
    assert rebuilt.get_config()["distillation_losses"] == config["distillation_losses"]
    assert rebuilt.get_config()["distillation_loss_weights"] == config["distillation_loss_weights"]
    assert not rebuilt.teacher.trainable


def test_weights_checkpoint_restores_student_and_adapter(tmp_path):
    teacher, student = _pair()
    x, y = tiny_data(8)
    terms = [LogitsDistillation(2.0), FeatureDistillation("features", "features", name="hint")]
    distiller = Distiller(teacher, student, terms, [0.5, 0.5], 0.5)
    distiller.compile(keras.optimizers.Adam(0.05), loss=CE)
    path = str(tmp_path / "ckpt")
    callback = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    distiller.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback])

    keras.utils.set_random_seed(1)
    fresh_terms = [
        LogitsDistillation(2.0),
        FeatureDistillation("features", "features", name="hint"),
    ]
    restored = Distiller(
        tiny_classifier(3, 8, name="teacher"), tiny_classifier(3, 4, name="student"), fresh_terms
    )
    restored.load_weights(path)
    np.testing.assert_allclose(restored(x).numpy(), distiller(x).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(
        fresh_terms[1].projection.kernel.numpy(), terms[1].projection.kernel.numpy()
    )


def test_elements_of_more_than_three_parts_are_refused_clearly():
    teacher, student = _pair()
    x, y = tiny_data(4)
    distiller = Distiller(teacher, student, LogitsDistillation())
    distiller.compile("sgd", loss=CE)
    data = tf.data.Dataset.from_tensors((x, y, np.ones(4), np.ones(4)))
    with pytest.raises(ValueError, match=r"x, \(x, y\) or \(x, y, weight\).*4 parts"):
        distiller.fit(data, verbose=0)


def test_mirrored_strategy_matches_single_device():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest splits the CPU into two logical devices"
    x, y = tiny_data(8)

    def loss_and_gradients(strategy):
        with strategy.scope():
            teacher, student = _pair()
            hint = FeatureDistillation("features", "features", name="hint")
            distiller = Distiller(
                teacher, student, [LogitsDistillation(3.0), hint], [0.6, 0.3], 0.4
            )
            distiller.compile(keras.optimizers.SGD(0.1), loss=CE)
        before = [v.numpy().copy() for v in distiller.trainable_variables]
        result = distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
        # One SGD step: the update divided by the learning rate is the gradient.
        gradients = [(b - v.numpy()) / 0.1 for b, v in zip(before, distiller.trainable_variables)]
        return result["loss"][0], gradients

    single_loss, single_grads = loss_and_gradients(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    assert mirrored.num_replicas_in_sync == 2
    mirrored_loss, mirrored_grads = loss_and_gradients(mirrored)
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5)
    for a, b in zip(single_grads, mirrored_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_whole_distiller_saves_and_loads_compiled(tmp_path):
    teacher, student = _pair()
    x, y = tiny_data(8)
    terms = [
        LogitsDistillation(schedules.Linear(4.0, 1.0, 10), name="kd"),
        FeatureDistillation("features", "features", name="hint"),
    ]
    distiller = Distiller(teacher, student, terms, [0.5, 0.5], 0.5)
    distiller.compile(keras.optimizers.Adam(0.01), loss=CE, metrics=["accuracy"])
    distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    loaded = keras.models.load_model(tmp_path / "distiller.keras")
    assert isinstance(loaded, Distiller) and not loaded.teacher.trainable
    np.testing.assert_allclose(loaded(x).numpy(), distiller(x).numpy(), rtol=1e-6)
    history = loaded.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert {"kd_loss", "hint_loss", "accuracy", "kd_temperature"} <= set(history)


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_interrupted_training_resumes_from_backup(tmp_path):
    x, y = tiny_data(8)

    def distiller():
        teacher, student = _pair()
        d = Distiller(teacher, student, LogitsDistillation(schedules.Linear(4.0, 1.0, 12)))
        d.compile(keras.optimizers.SGD(0.1), loss=CE)
        return d

    backup = str(tmp_path / "backup")
    interrupted = distiller()
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(
            x,
            y,
            batch_size=4,
            epochs=4,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), _StopAfter(1)],
        )
    resumed = distiller()
    history = resumed.fit(
        x,
        y,
        batch_size=4,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup)],
    )
    assert len(history.epoch) == 2  # epochs 3 and 4 only
    assert int(resumed.optimizer.iterations.numpy()) == 8
    uninterrupted = distiller()
    uninterrupted.fit(x, y, batch_size=4, epochs=4, shuffle=False, verbose=0)
    np.testing.assert_allclose(resumed(x).numpy(), uninterrupted(x).numpy(), rtol=1e-4, atol=1e-5)


@contextlib.contextmanager
def _policy(name):
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_trains_through_the_loss_scale_optimizer():
    x, y = tiny_data(8)
    with _policy("mixed_float16"):
        teacher, student = _pair()
        assert student(x).dtype == tf.float16
        teacher_before = [w.numpy().copy() for w in teacher.weights]
        distiller = Distiller(teacher, student, LogitsDistillation(2.0), [0.5], 0.5)
        distiller.compile(keras.optimizers.Adam(0.05), loss=CE)
        optimizer = distiller.optimizer
        assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        initial_scale = float(optimizer.loss_scale.numpy())
        history = distiller.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0).history
    losses_per_epoch = history["loss"]
    assert np.all(np.isfinite(losses_per_epoch))
    assert losses_per_epoch[-1] < losses_per_epoch[0]
    # Six finite steps: each was applied and counted towards growing the loss scale.
    assert int(optimizer.iterations.numpy()) == 6
    assert int(optimizer.dynamic_counter.numpy()) == 6
    assert float(optimizer.loss_scale.numpy()) == initial_scale == 2.0**15
    for a, b in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(a, b.numpy())


def _one_sgd_step(teacher, student, x, y, weight, learning_rate):
    distiller = Distiller(teacher, student, LogitsDistillation(2.0), [weight], weight)
    distiller.compile(keras.optimizers.SGD(learning_rate), loss=CE)
    before = [v.numpy().copy() for v in distiller.trainable_variables]
    distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    after = [v.numpy() for v in distiller.trainable_variables]
    return distiller, [(b - a) / learning_rate for b, a in zip(before, after)]


def test_mixed_precision_step_unscales_gradients_like_float32():
    # Loss weights of 1e-7 put the gradients below float16's smallest subnormal (6e-8): only a
    # scaled loss keeps them representable through the float16 backward pass.
    x, y = tiny_data(4)
    weight, learning_rate = 1e-7, 1e6
    teacher, student = _pair()
    weights = teacher.get_weights(), student.get_weights()
    _, float32_gradients = _one_sgd_step(teacher, student, x, y, weight, learning_rate)
    with _policy("mixed_float16"):
        teacher16, student16 = _pair()
        teacher16.set_weights(weights[0])
        student16.set_weights(weights[1])
        with tf.GradientTape() as tape:
            kd = losses.soft_target_kl(teacher16(x), student16(x, training=True), 2.0)
            ce = keras.losses.sparse_categorical_crossentropy(
                y, tf.cast(student16(x, training=True), tf.float32), from_logits=True
            )
            unscaled_loss = tf.reduce_mean(weight * kd + weight * ce)
        unscaled = tape.gradient(unscaled_loss, student16.trainable_variables)
        assert all(not np.any(g.numpy()) for g in unscaled)
        distiller, mixed_gradients = _one_sgd_step(
            teacher16, student16, x, y, weight, learning_rate
        )
    assert int(distiller.optimizer.iterations.numpy()) == 1
    for expected, actual in zip(float32_gradients, mixed_gradients):
        assert np.any(expected)
        np.testing.assert_allclose(actual, expected, rtol=2e-2, atol=2e-2 * np.abs(expected).max())


def test_float32_step_matches_tape_gradient_by_hand():
    keras.utils.set_random_seed(0)
    teacher = tiny_classifier(3, 8, name="teacher")
    inputs = keras.Input((6, 6, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    features = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.05))(features)
    student = keras.Model(inputs, outputs, name="student")
    x, y = tiny_data(4)
    alpha, temperature, learning_rate = 0.7, 3.0, 0.5
    before = [v.numpy().copy() for v in student.trainable_variables]
    with tf.GradientTape() as tape:
        logits = student(x, training=True)
        kd = losses.soft_target_kl(teacher(x, training=False), logits, temperature)
        ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        loss = tf.reduce_mean((1 - alpha) * ce + alpha * kd) + tf.add_n(student.losses)
    expected = [
        b - learning_rate * g.numpy()
        for b, g in zip(before, tape.gradient(loss, student.trainable_variables))
    ]
    distiller = Distiller(teacher, student, LogitsDistillation(temperature), [alpha], 1 - alpha)
    distiller.compile(keras.optimizers.SGD(learning_rate), loss=CE)
    assert not isinstance(distiller.optimizer, keras.mixed_precision.LossScaleOptimizer)
    distiller.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for want, variable in zip(expected, student.trainable_variables):
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=1e-6)
