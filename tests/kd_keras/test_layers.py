"""Batch norm under several replicas normalises over the global batch, so a 2-replica mirrored
training follows the one-device training epoch by epoch."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from classification.data import load_digits
from kd_keras.models import build_cnn_classifier
from kd_keras.models.layers import batch_norm


def test_batch_norm_is_synchronized_only_under_several_replicas():
    assert batch_norm("one").synchronized is False
    devices = [device.name for device in tf.config.list_logical_devices("CPU")[:2]]
    with tf.distribute.MirroredStrategy(devices).scope():
        assert batch_norm("two").synchronized is True


def _train(strategy, x, y) -> tuple[np.ndarray, float]:
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_cnn_classifier(x.shape[1:], 10, 0.25, 1, name="student")
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    data = tf.data.Dataset.from_tensor_slices((x[:640], y[:640]))
    data = data.shuffle(640, seed=0).batch(64, drop_remainder=True)
    history = model.fit(data, epochs=3, verbose=0).history
    accuracy = float(np.mean(np.argmax(model.predict(x[640:], verbose=0), -1) == y[640:]))
    return np.array(history["loss"]), accuracy


def test_two_mirrored_replicas_train_what_one_device_trains():
    digits = load_digits()
    x, y = digits.x[:900], digits.y[:900]
    devices = [device.name for device in tf.config.list_logical_devices("CPU")[:2]]
    one_losses, one_accuracy = _train(tf.distribute.get_strategy(), x, y)
    # Reduced on one device: other tests' mirrored collectives in this process stay apart.
    two = tf.distribute.MirroredStrategy(devices, tf.distribute.ReductionToOneDevice())
    two_losses, two_accuracy = _train(two, x, y)
    assert one_losses[-1] < 0.6 * one_losses[0]  # it learned
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-3)
    assert abs(two_accuracy - one_accuracy) <= 0.005
