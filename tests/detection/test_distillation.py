import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from detection.centernet import build_centernet, encode_targets
from detection.centernet.centernet_distiller import (
    BoxDistillation,
    CenterNetDistiller,
    HeatmapDistillation,
    ObjectHintDistillation,
    centernet_distillation_terms,
)
from detection.centernet.centernet_losses import retained_binary_kd
from kd_keras import losses, schedules
from tests.helpers import assert_config_round_trip


def _softplus(x):
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("teacher_logit", [-10.0, -2.0, 0.0, 3.0, 10.0])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_positive_keeps_target_one_whatever_the_teacher(teacher_logit, temperature):
    label = tf.constant([[[[1.0]]]])
    teacher = tf.constant([[[[teacher_logit]]]])
    student = tf.Variable([[[[0.5]]]])
    with tf.GradientTape() as tape:
        loss = retained_binary_kd(teacher, student, label, temperature)
    # Target exactly 1: loss = T² · (−log σ(z_s / T)), pushing the student up.
    expected = temperature**2 * _softplus(-0.5 / temperature)
    assert float(loss[0]) == pytest.approx(expected, rel=1e-5)
    assert float(tape.gradient(loss, student)[0, 0, 0, 0]) < 0


def test_teacher_teaches_away_from_positives_and_can_raise_cores():
    label = tf.constant([[[[0.9], [0.3]]]])  # a core location and a background one
    teacher = tf.constant([[[[2.0], [1.0]]]])  # σ = 0.881 and 0.731
    student = tf.constant([[[[2.0], [1.0]]]])
    # The student equals the teacher: no retained location, so nothing to learn.
    value = retained_binary_kd(teacher, student, label, 1.0, normalize="mean")
    assert float(value[0]) == pytest.approx(0.0, abs=1e-6)
    # Retaining the core (label 0.9 > teacher 0.881) raises that target to the label.
    cored = retained_binary_kd(teacher, student, label, 1.0, core_threshold=0.8, normalize="mean")
    p, q = 0.9, 1 / (1 + math.exp(-2.0))
    expected = (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))) / 2
    assert float(cored[0]) == pytest.approx(expected, rel=1e-4)


def test_softening_scale_and_limit():
    rng = np.random.default_rng(0)
    zt = tf.constant(rng.normal(size=(2, 4, 4, 3)) * 3, tf.float32)
    zs = tf.constant(rng.normal(size=(2, 4, 4, 3)) * 3, tf.float32)
    heat = np.zeros((2, 4, 4, 3), np.float32)
    heat[0, 1, 2, 0] = heat[1, 3, 3, 2] = heat[1, 0, 0, 1] = 1.0
    t_big = 4.0
    plain = retained_binary_kd(zt, zs, None, t_big, positive_retaining=False, normalize="mean")
    unit = retained_binary_kd(
        zt / t_big, zs / t_big, None, 1.0, positive_retaining=False, normalize="mean"
    )
    np.testing.assert_allclose(plain, t_big**2 * unit, rtol=1e-5)  # the T² scale
    # T → 1 without retained locations is the plain binary KD of kd_keras.
    reference = losses.binary_soft_target_kl(zt, zs, 1.0)
    for t in (1.0, 1.0 + 1e-4):
        np.testing.assert_allclose(
            retained_binary_kd(zt, zs, None, t, positive_retaining=False, normalize="mean"),
            reference,
            rtol=1e-3,
        )
    # Retaining with a label free of centres is the plain KD too.
    np.testing.assert_allclose(
        retained_binary_kd(zt, zs, np.minimum(heat, 0.5), 1.0, normalize="mean"),
        reference,
        rtol=1e-5,
    )
    # "objects" normalisation: the sum over locations divided by the number of centres.
    per_object = retained_binary_kd(zt, zs, heat, 1.0, positive_retaining=False)
    np.testing.assert_allclose(per_object, reference * 48 / np.array([1, 2]), rtol=1e-5)


def test_box_and_hint_terms_are_masked_to_objects():
    targets = encode_targets(np.array([[4, 4, 12, 12]]), np.array([0]), (16, 16), 1)
    labels = {k: tf.constant(v[None]) for k, v in targets.items()}
    teacher = np.zeros((1, 4, 4, 2), np.float32)
    student = np.zeros((1, 4, 4, 2), np.float32)
    student[0, 3, 3] = 5.0  # wrong only far from the object (label Gaussian 0 there)
    term = BoxDistillation("size", name="size_kd")
    term.build_for(tf.TensorShape([None, 4, 4, 2]), tf.TensorShape([None, 4, 4, 2]), None, None)
    assert float(term.compute(teacher, student, labels, None)[0]) == pytest.approx(0.0)
    student[0, 2, 2] = 1.0  # wrong at the centre (weight 1): |1| + |1| over total weight
    weight = float(np.sum(targets["heatmap"]))
    value = term.compute(teacher, student, labels, None)
    assert float(value[0]) == pytest.approx(2.0 / weight, rel=1e-5)

    hint = ObjectHintDistillation(object_weight=3.0, adapter="none", name="hint")
    hint.build_for(tf.TensorShape([None, 4, 4, 2]), tf.TensorShape([None, 4, 4, 2]), None, None)
    features = np.zeros((1, 4, 4, 2), np.float32)
    features[0, 0, 0] = 2.0  # error 4 (mean over channels) where there is no object
    weights = 1 + 3.0 * targets["heatmap"][..., 0]
    expected = 4.0 * weights[0, 0] / weights.sum()
    assert float(hint.compute(np.zeros_like(features), features, labels, None)[0]) == (
        pytest.approx(expected, rel=1e-5)
    )
    plain = ObjectHintDistillation(object_weight=0.0, adapter="none", name="plain")
    plain.build_for(tf.TensorShape([None, 4, 4, 2]), tf.TensorShape([None, 4, 4, 2]), None, None)
    assert float(plain.compute(np.zeros_like(features), features, labels, None)[0]) == (
        pytest.approx(4.0 / 16)
    )
    for obj in (term, hint, HeatmapDistillation(schedules.Linear(4, 1, 10), core_threshold=0.8)):
        assert_config_round_trip(obj)


def test_terms_switch_on_and_off():
    terms, weights = centernet_distillation_terms()
    assert [t.name for t in terms] == ["heatmap_kd", "hint"]
    assert weights == [0.005, 0.5]
    terms, weights = centernet_distillation_terms(heatmap_weight=0, offset_weight=1.0)
    assert [t.name for t in terms] == ["offset_kd", "hint"]
    with pytest.raises(ValueError, match="core_threshold"):
        HeatmapDistillation(core_threshold=2.0)


def test_centernet_distiller_trains_student_only():
    keras.utils.set_random_seed(0)
    shape = (32, 32, 3)
    teacher = build_centernet(shape, 2, width=0.5, name="teacher")
    student = build_centernet(shape, 2, "mobilenet", width=0.25, name="student")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, *shape)).astype(np.float32)
    boxes = [np.array([[2, 2, 14, 18]]), np.array([[10, 10, 30, 28], [0, 0, 8, 8]])] * 2
    classes = [np.array([0]), np.array([1, 0])] * 2
    targets = [encode_targets(b, c, shape[:2], 2) for b, c in zip(boxes, classes)]
    y = tuple(np.stack([t[k] for t in targets]) for k in ("heatmap", "size", "offset"))
    terms, weights = centernet_distillation_terms(
        temperature=schedules.Linear(3.0, 1.0, 10), size_weight=0.1, offset_weight=1.0
    )
    distiller = CenterNetDistiller(teacher, student, terms, weights)
    distiller.compile(keras.optimizers.Adam(1e-3))
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]

    # Evaluation reports each term; check the heatmap term against the function.
    logs = distiller.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    for name in ("heatmap_kd_loss", "size_kd_loss", "offset_kd_loss", "hint_loss"):
        assert name in logs and logs[name] >= 0
    assert logs["heatmap_kd_temperature"] == pytest.approx(3.0)
    expected = retained_binary_kd(teacher(x)[0], student(x)[0], y[0], 3.0)
    assert logs["heatmap_kd_loss"] == pytest.approx(float(np.mean(expected)), rel=1e-4)

    history = distiller.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.allclose(b, a) for b, a in zip(student_before, student.get_weights()))
    for ours, theirs in zip(distiller(x), student(x)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert distiller.distillation_losses[-1].projection is not None  # the hint adapter


def test_wrong_labels_are_refused():
    term = HeatmapDistillation(name="hm")
    with pytest.raises(ValueError, match="reads the label targets"):
        term.compute(tf.zeros([1, 2, 2, 1]), tf.zeros([1, 2, 2, 1]), tf.zeros([1]), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        term.build_for(tf.TensorShape([None, 4, 4, 2]), tf.TensorShape([None, 4, 4, 3]), None, None)
