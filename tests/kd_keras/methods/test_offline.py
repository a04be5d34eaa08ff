import numpy as np
import pytest
import tf_keras as keras

from classification.data import random_shift
from kd_keras import Distiller, FeatureDistillation, LogitsDistillation
from kd_keras.methods import offline
from tests.helpers import tiny_classifier, tiny_data

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _teacher():
    keras.utils.set_random_seed(0)
    return tiny_classifier(3, 8, name="teacher")


def test_cached_outputs_equal_online_teacher_outputs(tmp_path):
    teacher = _teacher()
    x, _ = tiny_data(10)
    cache = offline.compute_teacher_outputs(teacher, x, batch_size=3)
    offline.save_teacher_cache(cache, tmp_path / "cache")
    loaded = offline.load_teacher_cache(tmp_path / "cache")
    # Batched inference may round a near-zero logit differently in the last bit.
    np.testing.assert_allclose(
        loaded.outputs, teacher(x, training=False).numpy(), rtol=1e-6, atol=1e-7
    )
    assert loaded.output_shape == (3,)
    assert loaded.teacher_name == "teacher"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["meta.json", "outputs.npy"]


def test_offline_training_matches_online_training():
    x, y = tiny_data(8)
    teacher = _teacher()
    cache = offline.compute_teacher_outputs(teacher, x)

    def train(online: bool):
        keras.utils.set_random_seed(3)
        student = tiny_classifier(3, 4, name="student")
        term = LogitsDistillation(2.0, name="kd")
        if online:
            distiller = Distiller(teacher, student, term, [0.5], 0.5)
            data = (x, y)
        else:
            distiller = Distiller(None, student, term, [0.5], 0.5, teacher_output_shape=(3,))
            data = (offline.offline_dataset(x, y, cache, batch_size=4, shuffle=False),)
        distiller.compile(keras.optimizers.SGD(0.1), loss=CE)
        if online:
            history = distiller.fit(*data, batch_size=4, shuffle=False, epochs=2, verbose=0)
        else:
            history = distiller.fit(*data, epochs=2, verbose=0)
        return history.history["loss"], student.get_weights()

    online_loss, online_weights = train(True)
    offline_loss, offline_weights = train(False)
    np.testing.assert_allclose(offline_loss, online_loss, rtol=1e-5)
    for a, b in zip(online_weights, offline_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_augmentation_with_cache_is_refused():
    x, y = tiny_data(4)
    cache = offline.compute_teacher_outputs(_teacher(), x)
    with pytest.raises(ValueError, match="cannot be combined with random augmentation"):
        offline.offline_dataset(x, y, cache, 2, augmentation=random_shift(1))


def test_cache_used_on_other_inputs_is_refused():
    x, y = tiny_data(4)
    cache = offline.compute_teacher_outputs(_teacher(), x)
    with pytest.raises(ValueError, match="computed on other inputs"):
        offline.offline_dataset(x + 1.0, y, cache, 2)


def test_offline_distiller_refuses_intermediate_teacher_features():
    with pytest.raises(ValueError, match="offline cache of final teacher outputs cannot provide"):
        Distiller(
            None,
            tiny_classifier(3),
            FeatureDistillation("features", "features"),
            teacher_output_shape=(8,),
        )


def test_offline_distiller_needs_three_part_elements():
    x, y = tiny_data(4)
    distiller = Distiller(None, tiny_classifier(3), LogitsDistillation(), teacher_output_shape=(3,))
    distiller.compile("sgd", loss=CE)
    with pytest.raises(ValueError, match=r"\(x, y, teacher_outputs\)"):
        distiller.fit(x, y, verbose=0)


def test_missing_cache_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        offline.load_teacher_cache(tmp_path)
