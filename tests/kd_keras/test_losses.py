import numpy as np
import pytest
import tensorflow as tf

from kd_keras import losses
from tests.helpers import assert_config_round_trip


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_soft_target_kl_matches_hand_computation():
    teacher = np.array([[2.0, 1.0, 0.0]], np.float32)
    student = np.array([[0.0, 1.0, 0.5]], np.float32)
    temperature = 2.0
    p = _softmax(teacher / temperature)
    q = _softmax(student / temperature)
    expected = temperature**2 * np.sum(p * np.log(p / q))
    value = losses.soft_target_kl(teacher, student, temperature).numpy()
    np.testing.assert_allclose(value, [expected], rtol=1e-5)


def test_t_squared_scale():
    teacher = tf.constant([[3.0, -1.0, 0.5]])
    student = tf.constant([[0.5, 0.2, -0.3]])
    for temperature in (2.0, 5.0):
        log_p = tf.nn.log_softmax(teacher / temperature)
        log_q = tf.nn.log_softmax(student / temperature)
        unscaled = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), -1)
        scaled = losses.soft_target_kl(teacher, student, temperature)
        np.testing.assert_allclose(scaled.numpy(), temperature**2 * unscaled.numpy(), rtol=1e-5)


def test_identical_outputs_give_zero():
    z = tf.constant([[1.0, 2.0, 3.0], [0.0, 0.0, 9.0]])
    np.testing.assert_allclose(losses.soft_target_kl(z, z, 3.0).numpy(), [0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 20.0, 1000.0])
def test_stable_at_extreme_logits(temperature):
    teacher = tf.constant([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    student = tf.constant([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]])
    for fn in (losses.soft_target_kl, losses.soft_target_cross_entropy):
        value = fn(teacher, student, temperature).numpy()
        assert np.all(np.isfinite(value)), (fn.__name__, value)
        assert np.all(value >= 0)
    binary = losses.binary_soft_target_kl(teacher, student, temperature).numpy()
    assert np.all(np.isfinite(binary))


def test_probability_teacher_equals_logit_teacher():
    logits = tf.constant([[2.0, 0.5, -1.0]])
    student = tf.constant([[0.1, 0.2, 0.3]])
    from_logits = losses.soft_target_kl(logits, student, 3.0, "logits")
    from_probs = losses.soft_target_kl(tf.nn.softmax(logits), student, 3.0, "probabilities")
    np.testing.assert_allclose(from_probs.numpy(), from_logits.numpy(), rtol=1e-4)


def test_soft_cross_entropy_is_kl_plus_teacher_entropy():
    teacher = tf.constant([[2.0, 0.0, -1.0]])
    student = tf.constant([[0.0, 1.0, 0.0]])
    temperature = 3.0
    p = tf.nn.softmax(teacher / temperature)
    entropy = -tf.reduce_sum(p * tf.math.log(p), -1)
    ce = losses.soft_target_cross_entropy(teacher, student, temperature)
    kl = losses.soft_target_kl(teacher, student, temperature)
    np.testing.assert_allclose(ce.numpy(), (kl + temperature**2 * entropy).numpy(), rtol=1e-5)


def test_binary_kd_matches_hand_computation():
    teacher = np.array([[[0.5, -2.0]]], np.float32)
    student = np.array([[[1.0, 0.0]]], np.float32)
    temperature = 2.0
    qt = 1 / (1 + np.exp(-teacher / temperature))
    qs = 1 / (1 + np.exp(-student / temperature))
    kl = qt * np.log(qt / qs) + (1 - qt) * np.log((1 - qt) / (1 - qs))
    expected = temperature**2 * kl.mean()
    value = losses.binary_soft_target_kl(teacher, student, temperature).numpy()
    np.testing.assert_allclose(value, [expected], rtol=1e-5)


def test_hint_losses_by_hand():
    teacher = np.array([[[[1.0, 0.0]], [[0.0, 2.0]]]], np.float32)  # [1, 2, 1, 2]
    student = np.array([[[[0.0, 0.0]], [[1.0, 1.0]]]], np.float32)
    np.testing.assert_allclose(losses.hint_l2(teacher, student).numpy(), [(1 + 0 + 1 + 1) / 4])
    p = _softmax(teacher)
    log_q = np.log(_softmax(student))
    expected = np.mean(-np.sum(p * log_q, -1))
    np.testing.assert_allclose(
        losses.hint_cross_entropy(teacher, student).numpy(), [expected], rtol=1e-5
    )


def test_loss_classes_round_trip_and_reduce():
    loss = losses.SoftTargetKL(temperature=4.0, teacher_kind="probabilities")
    assert_config_round_trip(loss)
    assert_config_round_trip(losses.BinarySoftTargetKL(temperature=2.0))
    teacher = tf.nn.softmax(tf.constant([[2.0, 0.0], [0.0, 1.0]]))
    student = tf.constant([[0.0, 0.0], [0.0, 1.0]])
    expected = np.mean(losses.soft_target_kl(teacher, student, 4.0, "probabilities").numpy())
    np.testing.assert_allclose(loss(teacher, student).numpy(), expected, rtol=1e-5)


def test_unknown_output_kind_is_refused():
    with pytest.raises(ValueError, match="Received: kind='scores'"):
        losses.soft_target_kl(tf.zeros([1, 2]), tf.zeros([1, 2]), 1.0, "scores")


def _kl(p, q):
    return np.sum(p * np.log(p / q), axis=-1)


def test_decoupled_kd_matches_hand_computation():
    teacher = np.array([[3.0, 1.0, 0.0, -1.0]], np.float32)
    student = np.array([[0.5, 1.5, 0.0, 0.2]], np.float32)
    temperature, alpha, beta = 2.0, 1.0, 8.0
    p, q = _softmax(teacher / temperature), _softmax(student / temperature)
    # The teacher's top class is 0: the binary split [p0, 1 − p0], the rest renormalised.
    tckd = _kl(np.stack([p[:, 0], 1 - p[:, 0]], -1), np.stack([q[:, 0], 1 - q[:, 0]], -1))
    nckd = _kl(p[:, 1:] / p[:, 1:].sum(-1), q[:, 1:] / q[:, 1:].sum(-1))
    expected = temperature**2 * (alpha * tckd + beta * nckd)
    value = losses.decoupled_kd(teacher, student, temperature, "logits", alpha, beta).numpy()
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_decoupled_kd_with_unit_weights_regroups_the_hinton_kl():
    """KL = TCKD + (1 − p_t) · NCKD (Zhao et al. 2022, eq. 5)."""
    rng = np.random.default_rng(0)
    teacher, student = (rng.normal(size=(8, 6)).astype(np.float32) * 3 for _ in range(2))
    tckd = losses.decoupled_kd(teacher, student, 4.0, target_weight=1.0, non_target_weight=0.0)
    nckd = losses.decoupled_kd(teacher, student, 4.0, target_weight=0.0, non_target_weight=1.0)
    p_top = _softmax(teacher / 4.0).max(-1)
    kl = losses.soft_target_kl(teacher, student, 4.0)
    np.testing.assert_allclose(kl.numpy(), (tckd + (1 - p_top) * nckd).numpy(), rtol=1e-4)
    np.testing.assert_allclose(losses.decoupled_kd(teacher, teacher, 4.0), 0.0, atol=1e-5)


def test_decoupled_kd_gradient_is_finite_at_extreme_logits():
    teacher = tf.constant([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    student = tf.Variable([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]])
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(losses.decoupled_kd(teacher, student, 1.0))
    gradient = tape.gradient(value, student)
    assert np.isfinite(value.numpy()) and np.all(np.isfinite(gradient.numpy()))
