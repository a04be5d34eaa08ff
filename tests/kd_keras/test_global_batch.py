"""Losses averaged over the global batch: two mirrored replicas holding unequal shares of a batch
(an epoch's last, partial batch) take the step one device takes."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_keras import Distiller, LogitsDistillation, losses
from tests.helpers import tiny_classifier, tiny_data

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
ODD = 7  # split 4 + 3 over two replicas


def _mirrored() -> tf.distribute.MirroredStrategy:
    devices = [device.name for device in tf.config.list_logical_devices("CPU")[:2]]
    assert len(devices) == 2, "conftest splits the CPU into two logical devices"
    # Reduced on one device: other tests' mirrored collectives in this process stay apart.
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice(devices[0])
    )


def _sgd_step(strategy, build, targets=lambda y: y) -> tuple[float, list[np.ndarray]]:
    """One SGD step (learning rate 1) on `ODD` examples: the loss and the gradients."""
    x, y = tiny_data(ODD)
    with strategy.scope():
        model = build()
    before = [v.numpy().copy() for v in model.trainable_variables]
    data = tf.data.Dataset.from_tensor_slices((x, targets(y))).batch(ODD)
    loss = model.fit(data, epochs=1, verbose=0).history["loss"][0]
    return loss, [b - v.numpy() for b, v in zip(before, model.trainable_variables)]


def _plain(loss_of):
    def build():
        keras.utils.set_random_seed(0)
        model = tiny_classifier()
        model.compile(keras.optimizers.SGD(1.0), loss=loss_of(CE))
        return model

    return build


def _two_headed():
    """Logits and features, each with its own compiled loss and weight, as detection's three heads
    and re-id's two outputs are compiled."""
    keras.utils.set_random_seed(0)
    model = tiny_classifier()
    model = keras.Model(model.input, [model.output, model.get_layer("features").output])
    heads = [CE, keras.losses.MeanSquaredError()]
    wrapped = [losses.global_batch_loss(head) for head in heads]
    model.compile(keras.optimizers.SGD(1.0), wrapped, loss_weights=[1.0, 0.5])
    return model


def _logits_and_features(y):
    return y, np.linspace(0.0, 1.0, len(y) * 4, dtype=np.float32).reshape(len(y), 4)


def _distiller():
    keras.utils.set_random_seed(0)
    teacher, student = tiny_classifier(width=8, name="teacher"), tiny_classifier(name="student")
    distiller = Distiller(teacher, student, LogitsDistillation(3.0), [0.5], 0.5)
    distiller.compile(keras.optimizers.SGD(1.0), loss=CE)
    return distiller


def _assert_same(one, two):
    (one_loss, one_gradients), (two_loss, two_gradients) = one, two
    assert two_loss == pytest.approx(one_loss, rel=1e-5)  # the reported loss too
    for a, b in zip(one_gradients, two_gradients):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)


def test_a_compiled_global_batch_loss_takes_the_one_device_step_on_an_unequal_split():
    one = _sgd_step(tf.distribute.get_strategy(), _plain(losses.global_batch_loss))
    _assert_same(one, _sgd_step(_mirrored(), _plain(losses.global_batch_loss)))
    # Keras's own averaging weighs the 3-example share's examples 4/3 as much: another step.
    _, keras_gradients = _sgd_step(_mirrored(), _plain(lambda loss: loss))
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one[1], keras_gradients))
    assert difference > 1e-4


def test_per_head_global_batch_losses_take_the_one_device_step_on_an_unequal_split():
    one = _sgd_step(tf.distribute.get_strategy(), _two_headed, _logits_and_features)
    _assert_same(one, _sgd_step(_mirrored(), _two_headed, _logits_and_features))


def test_the_distiller_takes_the_one_device_step_on_an_unequal_split():
    one = _sgd_step(tf.distribute.get_strategy(), _distiller)
    _assert_same(one, _sgd_step(_mirrored(), _distiller))


def test_global_batch_loss_is_the_loss_itself_on_one_replica():
    assert losses.global_batch_loss(CE) is CE
    with _mirrored().scope():
        wrapped = losses.global_batch_loss(CE)
    assert isinstance(wrapped, losses.GlobalBatchMean)
    rebuilt = losses.GlobalBatchMean.from_config(wrapped.get_config())
    assert rebuilt.loss.get_config() == CE.get_config()
    x, y = tiny_data(ODD)
    logits = tiny_classifier()(x)
    # Outside a multi-replica step it is the plain mean.
    assert float(wrapped(y, logits)) == pytest.approx(float(CE(y, logits)), rel=1e-6)


def test_global_batch_mean_is_the_plain_mean_on_one_replica():
    values = tf.constant([1.0, 2.0, 6.0])
    assert float(losses.global_batch_mean(values)) == pytest.approx(3.0)
    assert float(losses.global_batch_mean(tf.zeros([0]))) == 0.0
