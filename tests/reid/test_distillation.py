import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_keras import Distiller, LogitsDistillation, schedules
from reid.config import ReIDConfig
from reid.distillation import (
    ProjectionDistillation,
    SimilarityDistillation,
    similarity_matrix,
)
from reid.losses import ReIDLoss
from reid.models import build_reid_model
from tests.helpers import assert_config_round_trip


@pytest.mark.parametrize("kind", ["linear", "cosine", "exponential", "step"])
def test_temperature_reaches_one_on_the_last_step(kind):
    settings = ReIDConfig().distill.model_copy(update={"schedule": kind, "temperature": 6.0})
    schedule = settings.temperature_schedule(50)
    values = [schedule.value_at(step) for step in range(50)]
    assert values[0] == pytest.approx(6.0)
    assert values[-1] == pytest.approx(1.0)
    assert all(a >= b - 1e-6 for a, b in zip(values, values[1:]))  # never goes back up
    assert schedule.value_at(500) == pytest.approx(1.0)


def test_similarity_loss_with_different_embedding_sizes_by_hand():
    teacher = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
    student = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    term = SimilarityDistillation(name="sim")
    term.build_for(tf.TensorShape([None, 3]), tf.TensorShape([None, 2]), None, None)
    loss = term.compute(teacher, student, None, None).numpy()

    def cosine(x):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return unit @ unit.T

    expected = np.mean((cosine(teacher) - cosine(student)) ** 2, axis=1)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert loss.mean() > 0.1
    # Same angles in a smaller space, any scale: zero loss.
    rotated = 5.0 * np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], np.float32)
    same_angles = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
    np.testing.assert_allclose(term.compute(same_angles, rotated, None, None), 0.0, atol=1e-6)


def test_gram_similarity_rows_are_normalized():
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], np.float32)
    gram = similarity_matrix(x, "gram").numpy()
    raw = x @ x.T
    np.testing.assert_allclose(gram, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="Expected similarity in"):
        SimilarityDistillation(similarity="l1")


def test_projection_term_maps_student_size_to_teacher_size():
    term = ProjectionDistillation(name="proj")
    term.build_for(tf.TensorShape([None, 6]), tf.TensorShape([None, 4]), None, None)
    assert term.projection.kernel.shape == (4, 6)
    student = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    teacher = 3.0 * term.projection(student).numpy()
    np.testing.assert_allclose(term.compute(teacher, student, None, None), 0.0, atol=1e-5)
    assert float(tf.reduce_mean(term.compute(-teacher, student, None, None))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="reads embedding vectors"):
        term.build_for(tf.TensorShape([None, 2, 2, 6]), tf.TensorShape([None, 4]), None, None)


def test_terms_round_trip():
    for term in (SimilarityDistillation(similarity="gram", name="s"), ProjectionDistillation()):
        assert_config_round_trip(term)


@pytest.mark.slow
def test_distiller_with_size_mismatch_and_dynamic_temperature():
    keras.utils.set_random_seed(0)
    shape, ids = (16, 8, 3), 4
    teacher = build_reid_model(shape, ids, "resnet", 0.25, embedding_dim=12, name="teacher")
    student = build_reid_model(shape, ids, "mobilenet", 0.125, embedding_dim=6, name="student")
    rng = np.random.default_rng(0)
    x = rng.random((8, *shape)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    terms = [
        LogitsDistillation(
            temperature=schedules.from_name("linear", 4.0, 1.0, total_steps=3),
            teacher_layer="logits",
            student_layer="logits",
            name="logits_kd",
        ),
        SimilarityDistillation(name="similarity_kd"),
        ProjectionDistillation(name="projection_kd"),
    ]
    distiller = Distiller(teacher, student, terms, [0.5, 1.0, 1.0], student_loss_weight=0.5)
    distiller.compile(keras.optimizers.Adam(0.01), loss=ReIDLoss())
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["logits_kd_temperature"], [4.0, 2.5, 1.0], rtol=1e-6)
    assert all(np.isfinite(history["similarity_kd_loss"]))
    assert all(np.isfinite(history["projection_kd_loss"]))
    assert history["similarity_kd_loss"][-1] < history["similarity_kd_loss"][0]
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    for ours, theirs in zip(distiller(x), student(x)):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
